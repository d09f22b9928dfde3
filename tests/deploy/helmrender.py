"""Helm's own engine (``helm-python-sdk``: Helm v4's Go SDK as ``libhelm_c``) in a child
process, so the Go runtime never loads into the test process itself.

    python -m tests.deploy.helmrender     # JSON requests on stdin, one answer per line

Request: ``{"op": "render" | "lint", "chart": PATH, "values": {...}}``. Answer: ``{"ok":
RESULT}`` (render: template path -> text; lint: Helm's report) or ``{"error": CLASS,
"message": TEXT}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _serve() -> None:
    from helm_python.chart import Chart, lint

    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "render":
                chart = Chart.load(req["chart"])
                ok: Any = chart.render(req["values"], name="orrery", namespace="orrery-system",
                                       is_install=True)
            else:
                ok = lint(req["chart"], req["values"], strict=True, namespace="orrery-system")
            answer = {"ok": ok}
        except Exception as exc:  # the SDK's errors, named for the test to check
            answer = {"error": type(exc).__name__, "message": str(exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class Helm:
    """The test side: one child process for a whole test module."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.deploy.helmrender"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, cwd=ROOT)

    def call(self, op: str, chart: str, values: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "chart": chart, "values": values}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the helm child process died ({self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    _serve()
