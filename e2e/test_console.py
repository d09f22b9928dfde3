"""The web console in a real browser against a real federation: headless Chromium (Debian's
package, driven by Playwright; Playwright's own browser builds are never downloaded) loads
the console, signs in with a token, and checks the fleet after a spoke is killed, a job's
slice timeline across that failover, and a pending job's reasons per cluster. Screenshots
go to the test's tmp folder, or to docs/ (which the README shows) with ORRERY_SCREENSHOTS=docs
set, so an ordinary run never changes committed files."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import manifest, spokes, wait_for

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[1] / "docs"
RUN = ["--steps", "200", "--step-time", "0.1", "--checkpoint-every", "5"]
REPLICA = Path(__file__).parent / "workloads" / "replica.py"
SERVICE = yaml.safe_dump(
    {
        "apiVersion": "orrery/v1",
        "kind": "InferenceService",
        "metadata": {"name": "chat"},
        "spec": {
            "gpusPerReplica": 1,
            "replicas": {"min": 1, "max": 1},
            "readinessPath": "/healthz",
            "command": [sys.executable, str(REPLICA)],
        },
    }
)


def chromium() -> str:
    path = os.environ.get("ORRERY_CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser"
    )
    if path is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does)")
    return path


def poll(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_console_shows_fleet_failover_timeline_and_reasons(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    browser_path = chromium()
    shots = DOCS if os.environ.get("ORRERY_SCREENSHOTS") == "docs" else tmp_path
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    fed = federation(spokes("eu-west", "us-east", "ap-south"))
    out = tmp_path / "out"
    with fed.client() as c:
        job = c.submit(manifest("console-gang", out, slices=2, args=RUN))
        j = wait_for(
            c, job.id, lambda j: (j.status.checkpoint_step or 0) >= 5, 30, "a checkpoint"
        )
        victim = next(s.cluster for s in j.status.slices if s.index == 0)
        assert victim is not None
        fed.kill_spoke(victim)
        moved = wait_for(
            c,
            job.id,
            lambda j: j.status.phase == "Running" and all(s.epoch >= 2 for s in j.status.slices),
            30,
            "the gang running again at epoch 2",
        )
        assert all(s.cluster != victim for s in moved.status.slices)
        big = yaml.safe_load(manifest("too-big", tmp_path / "big", slices=1, gpus=8))
        pending = c.submit(yaml.safe_dump(big))
        wait_for(
            c, pending.id, lambda j: bool(j.status.waiting and j.status.waiting.clusters), 20,
            "reasons per cluster",
        )
        assert fed.api_url is not None
        url = fed.api_url

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            # A wrong token is refused with a message, and nothing else is shown.
            page.fill("#token", "orr_not-a-token")
            page.click("#login-form button")
            sync_api.expect(page.locator("#login-error")).to_contain_text("refused")
            page.fill("#token", fed.admin_token)
            page.click("#login-form button")

            # Fleet: the killed cluster is Lost, the others Ready, GPUs per type.
            page.wait_for_selector(f'.cluster[data-cluster="{victim}"][data-state="Lost"]')
            states = {
                el.get_attribute("data-cluster"): el.get_attribute("data-state")
                for el in page.query_selector_all(".cluster")
            }
            assert states[victim] == "Lost"
            assert sorted(n for n, s in states.items() if s == "Ready") == sorted(
                {"eu-west", "us-east", "ap-south"} - {victim}
            )
            ready = '.cluster[data-state="Ready"] .gpus[data-gpu-type="H100"]'
            gpus = page.query_selector_all(ready)
            assert len(gpus) == 2 and all(g.get_attribute("data-total") == "4" for g in gpus)
            bar = page.locator(".totals .bar > span").first
            assert float(bar.evaluate("e => e.getBoundingClientRect().width")) > 0
            page.screenshot(path=str(shots / "console-fleet.png"), full_page=True)

            # The job's timeline: epoch 1 on the lost cluster, epoch 2 elsewhere.
            page.goto(f"{url}/#/jobs/{job.id}")
            page.wait_for_selector('.tl-row[data-slice="0"] .tl-seg[data-epoch="2"]')
            first = page.locator('.tl-row[data-slice="0"] .tl-seg[data-epoch="1"]')
            assert first.get_attribute("data-cluster") == victim
            assert first.get_attribute("data-phase") != "Running"
            second = page.locator('.tl-row[data-slice="0"] .tl-seg[data-epoch="2"]')
            assert second.get_attribute("data-cluster") != victim
            # Placed at epoch 1, then again after the failover.
            assert page.locator('#events tr[data-event="Placed"]').count() >= 2
            # The CSP forbids inline styles: the bars are sized through the CSSOM.
            assert float(second.evaluate("e => e.getBoundingClientRect().width")) > 0
            sync_api.expect(page.locator("#checkpoint")).to_contain_text("step")
            page.screenshot(path=str(shots / "console-job.png"), full_page=True)

            # The pending job: why it waits, per live cluster.
            page.goto(f"{url}/#/jobs/{pending.id}")
            page.wait_for_selector("#waiting tr[data-cluster]")
            rows = page.query_selector_all("#waiting tr[data-cluster]")
            reasons = {r.get_attribute("data-cluster"): r.inner_text() for r in rows}
            assert set(reasons) >= set(states) - {victim}, reasons
            page.screenshot(path=str(shots / "console-pending.png"), full_page=True)

            # Jobs table: search narrows it; queues show the pending job's position.
            page.goto(f"{url}/#/jobs")
            page.wait_for_selector(f'tr[data-job="{pending.id}"]')
            page.fill("#job-search", "too-big")
            poll("the search to narrow the table",
                 lambda: page.locator("tr[data-job]").count() == 1)
            page.goto(f"{url}/#/queues")
            page.wait_for_selector(f'tr[data-pending="{pending.id}"]')
            assert page.locator(f'tr[data-pending="{pending.id}"] td').first.inner_text() == "1"
            page.screenshot(path=str(shots / "console-queues.png"), full_page=True)

            # An inference service: its replicas, where they run, and the load driving it.
            with fed.client() as c:
                r = c._request("POST", "/v1/services", idempotent=False, content=SERVICE.encode())
                c._raise_for(r)
            page.goto(f"{url}/#/services")
            page.wait_for_selector('tr[data-service="chat"]')
            replica = page.locator('tr[data-service="chat"] [data-replica]')
            poll("the replica to be placed",
                 lambda: replica.count() == 1 and "unplaced" not in replica.first.inner_text(),
                 timeout=60)
            assert replica.first.inner_text().split()[0] in {"eu-west", "us-east", "ap-south"}
            page.screenshot(path=str(shots / "console-services.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
