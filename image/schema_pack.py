"""Assemble the published IUC / Pathways schema pack for the image, every file checked against a pinned checksum.

The pack is not kept in this repository: ``image/schema-pack.sha256`` lists its files (the layout
``PEM111_SCHEMA_DIR`` expects: ``iuc/...`` and ``pathways/...``) with their SHA-256, and this script copies exactly
those files into the output folder, refusing the build when one is missing or differs. The files come from either

* ``--fetch``: the two published repositories, each as an archive of one commit (``--iuc-commit``,
  ``--pathways-commit``): ``iuc/X`` is ``Publish/X`` of ``nhsconnect/Integrated-Urgent-Care`` and ``pathways/X``
  is ``src/main/schema/Pathways/X`` of ``UECIT/iucds-schema`` (each ``LICENSE`` the repository's own); or
* ``--from-dir DIR``: a local copy already in that layout (on machines without GitHub, e.g. ``../shared/schemas``).

Checksums pin the content, whatever the commit: an archive of a branch that has since changed fails here with the
files that differ, and ``--update-list DIR`` rewrites the list from a pack someone has reviewed.

Standard library only: it runs on the bare base image, before anything is installed. ``SSL_CERT_FILE`` names the
CA bundle for the download when a TLS-inspecting proxy sits in front of GitHub.

    python3 schema_pack.py --list schema-pack.sha256 --out /pack --from-dir /ctx/schema-pack
    python3 schema_pack.py --list schema-pack.sha256 --out /pack --fetch --iuc-commit SHA --pathways-commit SHA
    python3 image/schema_pack.py --list image/schema-pack.sha256 --update-list ../shared/schemas
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

IUC_REPOSITORY = "https://github.com/nhsconnect/Integrated-Urgent-Care"
PATHWAYS_REPOSITORY = "https://github.com/UECIT/iucds-schema"
#: Where each top folder of the pack lives inside its repository's archive (below the archive's root folder).
SOURCES = {"iuc": "Publish", "pathways": "src/main/schema/Pathways"}


def read_list(path: Path) -> dict[str, str]:
    """``relative path -> sha256`` from a ``sha256sum``-style list."""
    listed: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(None, 1)
            listed[name.strip().lstrip("*")] = digest
    return listed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def from_dir(folder: Path, listed: dict[str, str]) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in listed if (folder / name).is_file()}


def _archive_files(url: str, prefix: str, wanted: set[str]) -> dict[str, bytes]:
    """The files ``wanted`` (paths below ``prefix`` in the archive's single root folder) from the tar.gz at ``url``;
    ``LICENSE`` is the repository's own."""
    print(f"schema pack: downloading {url}", flush=True)
    with urllib.request.urlopen(url, timeout=300) as response:  # noqa: S310  (a fixed https URL)
        archive = io.BytesIO(response.read())
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=archive, mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            _root, _, inside = member.name.partition("/")
            relative = inside if inside == "LICENSE" else inside.removeprefix(prefix + "/")
            if relative in wanted and (inside == "LICENSE" or inside.startswith(prefix + "/")):
                extracted = tar.extractfile(member)
                if extracted is not None:
                    found[relative] = extracted.read()
    return found


def fetch(
    listed: dict[str, str],
    iuc_commit: str,
    pathways_commit: str,
    *,
    iuc_repository: str = IUC_REPOSITORY,
    pathways_repository: str = PATHWAYS_REPOSITORY,
) -> dict[str, bytes]:
    """The listed files from the two repositories' archives (``REPOSITORY/archive/COMMIT.tar.gz``, GitHub's form)."""
    files: dict[str, bytes] = {}
    for top, repository, commit in (
        ("iuc", iuc_repository, iuc_commit),
        ("pathways", pathways_repository, pathways_commit),
    ):
        wanted = {name.partition("/")[2] for name in listed if name.startswith(top + "/")}
        got = _archive_files(f"{repository}/archive/{commit}.tar.gz", SOURCES[top], wanted)
        files.update({f"{top}/{name}": data for name, data in got.items()})
    return files


def check_and_write(files: dict[str, bytes], listed: dict[str, str], out: Path) -> list[str]:
    """Write the listed files to ``out``; return the problems (a missing file, a checksum that differs)."""
    problems = []
    for name, digest in sorted(listed.items()):
        data = files.get(name)
        if data is None:
            problems.append(f"{name}: missing")
        elif sha256(data) != digest:
            problems.append(f"{name}: sha256 {sha256(data)}, pinned {digest}")
        else:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return problems


def update_list(folder: Path, list_path: Path) -> None:
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    header = "# The IUC / Pathways schema pack: each file the image carries, with its SHA-256 (schema_pack.py).\n"
    list_path.write_text(
        header + "".join(f"{sha256((folder / n).read_bytes())}  {n}\n" for n in names), encoding="utf-8"
    )
    print(f"{list_path}: {len(names)} files from {folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", type=Path, required=True, help="the sha256sum-style list of the pack's files")
    parser.add_argument("--out", type=Path, help="folder to write the checked pack into")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-dir", type=Path, help="a local copy of the pack (iuc/ and pathways/)")
    source.add_argument("--fetch", action="store_true", help="download the two repositories' archives")
    source.add_argument("--update-list", type=Path, metavar="DIR", help="rewrite --list from the pack in DIR")
    parser.add_argument("--iuc-commit", default="", help="commit (or ref) of nhsconnect/Integrated-Urgent-Care")
    parser.add_argument("--pathways-commit", default="", help="commit (or ref) of UECIT/iucds-schema")
    parser.add_argument("--iuc-repository", default=IUC_REPOSITORY, help="where to download the IUC pack from")
    parser.add_argument("--pathways-repository", default=PATHWAYS_REPOSITORY, help="... and the Pathways schema")
    args = parser.parse_args(argv)
    if args.update_list:
        update_list(args.update_list, args.list)
        return 0
    if args.out is None:
        parser.error("--out is required")
    listed = read_list(args.list)
    if args.fetch:
        if not (args.iuc_commit and args.pathways_commit):
            parser.error("--fetch needs --iuc-commit and --pathways-commit")
        try:
            files = fetch(
                listed,
                args.iuc_commit,
                args.pathways_commit,
                iuc_repository=args.iuc_repository,
                pathways_repository=args.pathways_repository,
            )
        except (OSError, tarfile.TarError) as exc:  # urllib's errors are OSErrors
            print(
                f"schema pack: download failed ({exc}); or build from a local copy: SCHEMA_PACK=local", file=sys.stderr
            )
            return 1
    else:
        if not args.from_dir.is_dir():
            print(f"schema pack: {args.from_dir} is not a folder", file=sys.stderr)
            return 1
        files = from_dir(args.from_dir, listed)
    problems = check_and_write(files, listed, args.out)
    if problems:
        shutil.rmtree(args.out, ignore_errors=True)
        print(f"schema pack refused: {len(problems)} of {len(listed)} files missing or different:", file=sys.stderr)
        for problem in problems[:20]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"schema pack: {len(listed)} files checked into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
