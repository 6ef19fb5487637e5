"""``docs/benchmarks.md`` is written by two commands: ``make bench`` and ``make soak``. Each owns one section,
between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers, and replaces only that one, so running one
command keeps the other's last figures; a part of a section may have markers of its own, so that a step run alone
(``python -m benchmarks.soak --only frontdoor``) replaces only its part. Also: a description of the machine and of
how busy it was."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

TITLE = """# Benchmarks and robustness

Generated: `make bench` writes the benchmark section (`python -m benchmarks.run`), `make soak` the robustness
section (`python -m benchmarks.soak`). Each replaces only its own section. Do not edit by hand.
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB memory"
                break
    except (OSError, ValueError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}, {system}"


def code_version() -> str:
    """The commit measured, and whether the work tree differed from it (read-only git queries)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "adaptor", "mappings"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"`{commit}`" + (" with uncommitted changes to adaptor/ or mappings/" if changed else "")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (how busy the machine was), or "unknown"."""
    try:
        return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())
    except OSError:
        return "unknown"


def marked(name: str, text: str) -> str:
    """``text`` between the markers of section ``name``: a section, or a part of one that can be replaced alone."""
    return f"<!-- {name}:begin -->\n{text.strip()}\n<!-- {name}:end -->"


def replace_section(path: Path, name: str, text: str, *, within: str | None = None) -> None:
    """Write ``text`` as section ``name`` of ``path``: in place of the old one; when absent, at the end of section
    ``within`` if that is given and present, else at the end of the file."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = marked(name, text)
    current = path.read_text(encoding="utf-8") if path.exists() else TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    outer_end = f"<!-- {within}:end -->" if within else None
    if pattern.search(current):
        updated = pattern.sub(lambda _match: block, current)
    elif outer_end and outer_end in current:
        head, _, tail = current.partition(outer_end)
        updated = head.rstrip() + "\n\n" + block + "\n" + outer_end + tail
    else:
        updated = current.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated, encoding="utf-8")
