"""``orrery submit`` of a multi-document file, and of ``-`` (stdin): one batch request, a
line per job, a non-zero exit when any is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from orrery_hub.main import Hub
from tests.conftest import ADMIN_TOKEN

DOC = "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n"


def docs(*specs: tuple[str, str]) -> str:
    return "---\n".join(DOC.format(name=n, spec=s) for n, s in specs)


async def orrery(
    hub: Hub, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert hub.endpoints is not None
    env = {
        **os.environ,
        "COLUMNS": "200",
        "ORRERY_CONFIG": os.devnull,
        "ORRERY_HUB": hub.endpoints.api_url,
        "ORRERY_TOKEN": ADMIN_TOKEN,
    }
    # In a thread: the hub answers on this test's event loop.
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orrery.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_a_multi_document_file_is_submitted_as_one_batch(hub: Hub, tmp_path: Path) -> None:
    f = tmp_path / "jobs.yaml"
    f.write_text(
        docs(("a", "command: [x]"), ("b", "command: [y], slices: 2"), ("c", "command: [z]"))
    )
    p = await orrery(hub, "submit", str(f))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and all(ln.startswith("submitted ") for ln in lines)
    assert [ln.split()[1].rsplit("-", 1)[0] for ln in lines] == ["a", "b", "c"]
    assert hub.admission.commits >= 1
    assert len(await hub.list_jobs(None, 100)) == 3


async def test_stdin_is_read_with_a_dash(hub: Hub) -> None:
    p = await orrery(hub, "submit", "-", stdin=docs(("s1", "command: [x]"), ("s2", "command: [x]")))
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("submitted ") == 2


async def test_a_bad_document_is_refused_locally_and_nothing_is_sent(hub: Hub) -> None:
    p = await orrery(hub, "submit", "-", stdin=docs(("ok", "command: [x]"), ("bad", "slices: 0")))
    assert p.returncode == 2
    assert "document 2" in p.stderr and "Traceback" not in p.stderr
    assert await hub.list_jobs(None, 100) == []


async def test_a_refused_job_is_named_and_the_exit_is_non_zero(hub: Hub) -> None:
    # Valid here, refused by the hub: its assignment would not fit one NATS message.
    env = ", ".join(f"K{i}: {'v' * 31_500}" for i in range(31))
    huge = f"command: [x], env: {{{env}}}"
    p = await orrery(hub, "submit", "-", stdin=docs(("ok", "command: [x]"), ("huge", huge)))
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.count("submitted ") == 1
    assert "document 2:" in p.stderr
