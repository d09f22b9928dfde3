"""A new user's first hour: the mistakes a user makes following the README, each one a
clear line and nothing lost (issue 17)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orrery.errors import InvalidInput
from orrery.hubaddress import hub_url
from orrery.statedir import MARKER, claim

ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORRERY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "ORRERY_CONFIG": os.devnull, **(env or {})},
    )


# ---- 1. the demo never deletes a folder it did not make ----------------------------------


def test_demo_refuses_a_state_folder_it_did_not_make(tmp_path: Path) -> None:
    """ORRERY_STATE set for a real hub: `orrery demo` must not wipe that hub's database."""
    hub_state = tmp_path / "my-hub"
    hub_state.mkdir()
    (hub_state / "hub.db").write_text("precious")
    p = run("demo", env={"ORRERY_STATE": str(hub_state)}, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "refusing to delete" in p.stderr and str(hub_state) in p.stderr, p.stderr
    assert (hub_state / "hub.db").read_text() == "precious"
    assert not (hub_state / MARKER).exists()


def test_claim_wipes_only_its_own_marked_folder(tmp_path: Path) -> None:
    fresh = claim(tmp_path / "new", "demo")
    assert (fresh / MARKER).read_text().strip() == "demo"
    (fresh / "old-run.log").write_text("x")
    again = claim(tmp_path / "new", "demo")  # its own: wiped and marked again
    assert not (again / "old-run.log").exists() and (again / MARKER).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim(empty, "demo") / MARKER).exists()  # an empty folder loses nothing
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER).write_text("up\n")  # marked by someone else
    (other / "data").write_text("keep")
    with pytest.raises(InvalidInput, match="refusing to delete"):
        claim(other, "demo")
    assert (other / "data").read_text() == "keep"
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(InvalidInput, match="is a file"):
        claim(afile, "demo")
    assert afile.read_text() == "keep"


# ---- 4. ./dev test on a machine without PostgreSQL ---------------------------------------


def test_postgres_tests_skip_saying_why_without_a_server(tmp_path: Path) -> None:
    """A fresh clone has no PostgreSQL: those tests skip, and the summary says why."""
    from orrery.natsserver import free_port

    repo = Path(__file__).resolve().parents[1]
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    env = {k: v for k, v in os.environ.items() if k != "ORRERY_TEST_PG_REQUIRED"}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/hub/test_store.py", "-k", "postgres", "-p",
         "no:randomly"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "ORRERY_TEST_PG": nowhere},
    )
    assert p.returncode == 0, p.stdout[-3000:]
    assert "error" not in p.stdout.splitlines()[-1], p.stdout[-2000:]
    assert "skipped" in p.stdout.splitlines()[-1]
    # -rs is on by default: the reason is in the summary, naming the server it tried.
    assert "SKIPPED" in p.stdout and "no PostgreSQL server at" in p.stdout, p.stdout[-2000:]
    assert nowhere in p.stdout


# ---- 7. a wrong hub URL says what answered ------------------------------------------------


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!DOCTYPE HTML><html><head><title>Directory listing</title></head></html>"
        self.send_response(200 if self.path.startswith("/v1/jobs") else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def web_page() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_hub_url_pointing_at_a_web_page_says_what_answered(web_page: int) -> None:
    p = run("jobs", "--hub", f"http://127.0.0.1:{web_page}", "--token", "t")
    assert p.returncode != 0
    assert "<!DOCTYPE" not in p.stderr + p.stdout and "Traceback" not in p.stderr
    assert "is not an Orrery hub" in p.stderr and "Directory listing" in p.stderr, p.stderr
    assert "expected the hub API's JSON" in p.stderr


def test_a_hub_url_without_a_scheme_is_http(web_page: int) -> None:
    assert hub_url("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert hub_url(" https://hub.example/ ") == "https://hub.example"
    with pytest.raises(InvalidInput, match="expected http://HOST:PORT"):
        hub_url("ftp://hub")
    # It reaches the server (which is not a hub), instead of "cannot reach ... is it running?"
    p = run("clusters", "--hub", f"127.0.0.1:{web_page}", "--token", "t")
    assert p.returncode != 0
    assert f"http://127.0.0.1:{web_page} is not an Orrery hub" in p.stderr, p.stderr
    assert "cannot reach" not in p.stderr


def test_a_hub_url_with_a_wrong_scheme_is_one_line() -> None:
    p = run("jobs", "--hub", "htp://127.0.0.1:8080", "--token", "t")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "not a hub URL" in p.stderr, p.stderr
