"""No tracked file names a folder of the machine it was written on (/work/..., /root/...,
../shared): a user's clone has none of them, so a default, a docstring or a benchmark
recipe pointing there fails for everyone else (issue 17, item 10)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# An absolute path starts a word: after a space, a quote, a bracket, '=' or ':'. So
# `STATE/work/<job>` (a folder under a state folder) is not one.
MACHINE_PATH = re.compile(r"""(?:^|[\s"'`(\[=:,])(/work/|/root/|\.\./shared/)""")


CHECKERS = {"tests/test_no_machine_paths.py", "tests/test_docs_links.py"}


def offending_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if MACHINE_PATH.search(line)]


def test_the_pattern_finds_what_it_should() -> None:
    assert offending_lines('WHOLE = Path("/work/shared/traces/x.csv")')
    assert offending_lines("    cd /work/main && .venv/bin/python -m pytest")
    assert offending_lines("see ../shared/DESIGN.md")
    assert offending_lines("home=/root/.cache")
    assert not offending_lines("in ``STATE/work/<job>.<index>.<epoch>/`` (0700)")
    assert not offending_lines("tests/data/openb_pod_list_gpuspec33.csv")


def test_no_tracked_file_names_a_development_machine_path() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    found: list[str] = []
    for name in filter(None, files):
        path = REPO / name
        if path.suffix in {".png", ".csv", ".gz", ".ico", ".woff2"} or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {line[:120]}" for line in offending_lines(text)]
    # The tests that look for these patterns name them, in text only they read.
    found = [f for f in found if f.split(":", 1)[0] not in CHECKERS]
    assert not found, "machine paths in the repository:\n" + "\n".join(found)
