"""The house rules that keep the code easy to walk through, checked on every run.

The import contracts live in ``.importlinter`` and are enforced by import-linter (a well-kept tool made for the
job) rather than by code of our own; ARCHITECTURE.md explains them. The size rules are the ones issue 11 set: a
short top level, and no module so long that it hides more than one concern.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADAPTOR = REPO / "adaptor"

#: The top level of ``adaptor/`` holds the package marker, settings, the accept step and the composition root.
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 600
#: The ITK rule table reads best as one table, so it may be longer.
LONG_MODULES_ALLOWED = {ADAPTOR / "itk" / "rules.py"}


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", str(REPO / ".importlinter"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_top_level_stays_short() -> None:
    modules = sorted(path.name for path in ADAPTOR.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_no_module_hides_several_concerns() -> None:
    too_long = {
        str(path.relative_to(REPO)): lines
        for path in sorted(ADAPTOR.rglob("*.py"))
        if path not in LONG_MODULES_ALLOWED and (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, too_long
