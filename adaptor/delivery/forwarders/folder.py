"""``dir:PATH``: one file per message in a folder, written atomically."""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from pathlib import Path

from adaptor.delivery.forwarders import Delivery, DeliveryError

_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 160


def safe_file_stem(message_id: str) -> str:
    """``message_id`` reduced to characters that are safe in a file name on any platform.

    ``uuid:2B77...`` becomes ``uuid_2B77...``; leading dots are dropped so nothing becomes a hidden file.
    """
    stem = _UNSAFE_FILENAME_CHARACTERS.sub("_", message_id).lstrip(".")[:_MAX_STEM]
    return stem or "message"


class FolderForwarder:
    """Writes each Bundle to ``<folder>/<MessageID>.json``, atomically and durably.

    The file is written under a temporary name, fsynced, then linked into place, and the folder is fsynced,
    so a reader of the folder never sees a partial file and a delivered file survives a crash. A MessageID
    already used by a *different* message gets ``<MessageID>-<first 8 of record id>.json`` instead of
    overwriting it; the same bytes delivered again are not written twice. A reconverted version of a Bundle
    (``bundle_version`` above 1) atomically replaces the file of an earlier version of the same message, found
    by its resource ids (a reconversion keeps them, see :attr:`mappings.MappingContext.id_seed`); when the folder
    has none (a consumer took it away), it is written as a new file. The metadata is not written: the folder holds
    exactly what a consumer reads, one Bundle per file.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.target = f"dir:{self.folder}"

    def send(self, delivery: Delivery) -> None:
        record_id, message_id, bundle_json = delivery.record_id, delivery.message_id, delivery.bundle_json
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = safe_file_stem(message_id)
        temporary = self.folder / f".{stem}.{uuid.uuid4().hex}.tmp"
        names = (f"{stem}.json", f"{stem}-{record_id[:8]}.json")
        try:
            self._write_synced(temporary, bundle_json)
            earlier = self._earlier_version(names, delivery) if delivery.bundle_version > 1 else None
            if earlier is not None:
                if not self._already_there(earlier, bundle_json):
                    os.replace(temporary, earlier)
                _fsync_directory(self.folder)
                return
            for name in names:
                final = self.folder / name
                if self._already_there(final, bundle_json) or self._link_new(temporary, final):
                    break
            else:
                # Both names hold other content: only a redelivery of this record can own the suffixed name.
                os.replace(temporary, self.folder / f"{stem}-{record_id[:8]}.json")
            _fsync_directory(self.folder)
        finally:
            temporary.unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to release: every send opens and closes its own files."""

    def check(self) -> None:
        """The folder exists (created if missing, as a send would) and takes a new file: one is created and
        removed, under a hidden temporary name like those of :meth:`send`, which consumers already skip."""
        probe = self.folder / f".ready-check.{uuid.uuid4().hex}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(probe, "xb"):
                pass
            probe.unlink()
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc.strerror or exc}"
            raise DeliveryError(f"{self.target} cannot take files: {reason}") from exc

    @staticmethod
    def _write_synced(path: Path, data: bytes) -> None:
        with open(path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def _earlier_version(self, names: tuple[str, ...], delivery: Delivery) -> Path | None:
        """The file, among ``names``, that holds an earlier version of ``delivery``'s Bundle: one that contains
        the fullUrl of its second entry (the first is the MessageHeader, whose id is the MessageID that other
        messages may share; the others' ids are drawn from the record id and kept by a reconversion)."""
        try:
            entries = json.loads(delivery.bundle_json).get("entry", [])
            marker = entries[1]["fullUrl"].encode("utf-8") if len(entries) > 1 else None
        except (ValueError, AttributeError, KeyError, TypeError):
            marker = None
        if not marker:
            return None
        for name in names:
            path = self.folder / name
            try:
                if marker in path.read_bytes():
                    return path
            except FileNotFoundError:
                continue
        return None

    @staticmethod
    def _already_there(path: Path, data: bytes) -> bool:
        try:
            return path.stat().st_size == len(data) and path.read_bytes() == data
        except FileNotFoundError:
            return False

    @staticmethod
    def _link_new(source: Path, destination: Path) -> bool:
        """Give ``source`` the name ``destination`` unless that name exists; atomic, never overwrites."""
        try:
            os.link(source, destination)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            # Some file systems (certain network and container mounts) have no hard links: fall back to a
            # check-then-rename, atomic for readers but racing with a concurrent writer of the same name.
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if destination.exists():
                return False
            os.replace(source, destination)
            return True


def _fsync_directory(folder: Path) -> None:
    """Make the new directory entry itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
