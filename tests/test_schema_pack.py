"""``image/schema_pack.py``, which puts the published schema pack into the image: every file checked against
``image/schema-pack.sha256``, from a local copy or from the two repositories' archives (here: archives made by the
test in GitHub's layout, read through ``file://`` URLs, since GitHub is not reachable from the tests)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from conftest import REPO, load_module, require_shared

LIST = REPO / "image" / "schema-pack.sha256"


schema_pack = load_module(REPO / "image" / "schema_pack.py", "nhs111_schema_pack")


def _fake_pack(folder: Path) -> Path:
    """A pack in the layout PEM111_SCHEMA_DIR expects, with made-up content, and its list."""
    for name, text in {
        "iuc/LICENSE": "IUC licence",
        "iuc/Schemas/POCD_MT000002UK01.xsd": "<schema/>",
        "iuc/dt/datatypes.xsd": "<types/>",
        "pathways/LICENSE": "Pathways licence",
        "pathways/pathwaysCase_v2.4.xsd": "<case/>",
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    schema_pack.update_list(folder, folder.parent / "list.sha256")
    return folder.parent / "list.sha256"


def test_the_pinned_list_is_the_shared_pack() -> None:
    """The list names every file of ../shared/schemas with its checksum: the image carries exactly that pack."""
    pack = require_shared("schemas")
    listed = schema_pack.read_list(LIST)
    assert sorted(listed) == sorted(str(p.relative_to(pack)) for p in pack.rglob("*") if p.is_file())
    assert all(schema_pack.sha256((pack / name).read_bytes()) == digest for name, digest in listed.items())


def test_a_local_copy_is_checked_file_by_file(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    listing = _fake_pack(pack)
    assert schema_pack.main(["--list", str(listing), "--out", str(tmp_path / "out"), "--from-dir", str(pack)]) == 0
    assert (tmp_path / "out" / "pathways" / "pathwaysCase_v2.4.xsd").read_text() == "<case/>"

    (pack / "iuc" / "dt" / "datatypes.xsd").write_text("<types changed='yes'/>")
    (pack / "pathways" / "LICENSE").unlink()
    out = tmp_path / "refused"
    assert schema_pack.main(["--list", str(listing), "--out", str(out), "--from-dir", str(pack)]) == 1
    assert not out.exists()  # nothing half-written is left for the image


def test_the_archives_are_read_in_githubs_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    listing = _fake_pack(pack)
    # GitHub's archive of a commit: one root folder REPO-COMMIT/, the repository's files below it.
    layout = {
        "iuc": ("Integrated-Urgent-Care-abc123", "Publish", "README.md"),
        "pathways": ("iucds-schema-def456", "src/main/schema/Pathways", "pom.xml"),
    }
    repositories = {}
    for top, (root, inside, other) in layout.items():
        archive_dir = tmp_path / f"{top}-repo" / "archive"
        archive_dir.mkdir(parents=True)
        with tarfile.open(archive_dir / "abc.tar.gz", "w:gz") as tar:
            for path in (pack / top).rglob("*"):
                relative = path.relative_to(pack / top)
                arcname = f"{root}/LICENSE" if str(relative) == "LICENSE" else f"{root}/{inside}/{relative}"
                tar.add(path, arcname=arcname, recursive=False)
            tar.add(listing, arcname=f"{root}/{other}")  # a file the pack does not list
        repositories[top] = (tmp_path / f"{top}-repo").as_uri()
    out = tmp_path / "out"
    fetched = schema_pack.main(
        ["--list", str(listing), "--out", str(out), "--fetch", "--iuc-commit", "abc", "--pathways-commit", "abc",
         "--iuc-repository", repositories["iuc"], "--pathways-repository", repositories["pathways"]]
    )  # fmt: skip
    assert fetched == 0, capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        schema_pack.read_list(listing)
    )

    missing = schema_pack.main(
        ["--list", str(listing), "--out", str(tmp_path / "none"), "--fetch", "--iuc-commit", "nosuch",
         "--pathways-commit", "abc", "--iuc-repository", repositories["iuc"]]
    )  # fmt: skip
    assert missing == 1 and "download failed" in capsys.readouterr().err
