"""The README's shell blocks, run exactly as written (issue 17, "Done when"): the commands
are read out of README.md itself, so a README edit that breaks one fails here.

They run in a scratch folder that links to the checkout's files, so that what they write
(`.orrery/`, `sim-out/`) lands there and never in the checkout. Only the environment is
set: a free port instead of 8080 (another federation may hold it on this machine) and a
config file of its own. The README's placeholder `ID` stands for a job of the test's own.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[list[str]]:
    """Each ```bash block of ``text`` as its commands: continuation lines joined, comments
    and blank lines dropped."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = body.replace("\\\n", " ")
        # A comment starts at a '#' after a space (the README quotes none), as in bash.
        cmds = [" ".join(re.sub(r"(^|\s)#.*$", "", line).split()) for line in joined.splitlines()]
        blocks.append([c for c in cmds if c])
    return blocks


def block_starting(prefix: str) -> list[str]:
    found = [b for b in bash_blocks((REPO / "README.md").read_text()) if b and
             b[0].startswith(prefix)]
    assert found, f"README.md has no ```bash block starting with {prefix!r}"
    return found[0]


def sandbox(tmp: Path) -> Path:
    """A folder whose entries link to the checkout's (``./dev`` works there unchanged)."""
    box = tmp / "clone"
    box.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".orrery", "sim-out"}:
            (box / entry.name).symlink_to(entry)
    return box


def env_for(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORRERY_")}
    return {**env, "COLUMNS": "120", "ORRERY_CONFIG": str(tmp / "config.yaml")}


def sh(cmd: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_the_parser_reads_blocks_as_a_shell_would() -> None:
    text = "x\n```bash\n./dev a b \\\n  --c d   # a comment\n\ncat f | ./dev e -\n```\n"
    assert bash_blocks(text) == [["./dev a b --c d", "cat f | ./dev e -"]]


def test_readme_using_it_block_as_written(tmp_path: Path) -> None:
    """`./dev up --spokes 3`, then the block's commands, in another shell, with what up
    printed and wrote."""
    cmds = block_starting("./dev up")
    up, rest = cmds[0], cmds[1:]
    assert any(c.startswith("./dev submit") for c in rest)
    box, env = sandbox(tmp_path), env_for(tmp_path)
    proc = subprocess.Popen(["bash", "-c", f"exec {up}"], cwd=box, text=True,
                            env={**env, "ORRERY_PORT": "0"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while "export ORRERY_TOKEN=" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += proc.stdout.readline()
        # A job of ours that is still running when the block says `cancel ID`.
        job = tmp_path / "long.yaml"
        job.write_text(
            "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: long}\n"
            f"spec: {{gpusPerSlice: 1, command: [{sys.executable!r}, -c, "
            "'import time; time.sleep(600)']}\n"
        )
        job_id = sh(f"./dev submit {job} -o name", box, env).strip()
        for cmd in rest:
            out = sh(cmd.replace(" ID", f" {job_id}"), box, env)
            if cmd.startswith("./dev submit") and "--wait" in cmd:
                assert out.splitlines()[-1].endswith(": Succeeded"), out
            elif "submit" in cmd:
                assert "submitted" in out, out
            if cmd.startswith("./dev clusters"):
                assert all(n in out for n in ("eu-west", "us-east", "ap-south")), out
            if cmd.startswith("./dev cancel"):
                assert f"{job_id}: Cancelled" in out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def test_readme_sim_example_as_written(tmp_path: Path) -> None:
    """The `orrery sim` example on the slice the repository ships; the whole-trace one
    names a file the repository ships too."""
    box, env = sandbox(tmp_path), env_for(tmp_path)
    (cmd,) = block_starting("./dev sim tests/data/openb_pod_list_gpuspec33.slice2000.csv")
    out = sh(cmd, box, env, timeout=600)
    assert "orrery" in out and (box / "sim-out" / "openb-slice" / "summary.json").is_file()
    (whole,) = block_starting("./dev sim tests/data/openb_pod_list_gpuspec33.csv")
    assert all((REPO / w).is_file() for w in shlex.split(whole) if w.startswith("tests/data/"))
