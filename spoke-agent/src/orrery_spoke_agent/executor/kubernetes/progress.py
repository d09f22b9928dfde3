"""How a Kubernetes slice's progress reaches the agent without the slice holding any API
permission: a small HTTP endpoint on the agent, and a token per attempt.

At launch the agent draws a random token for the attempt, gives it to the pod (environment
``ORRERY_PROGRESS_TOKEN``, with ``ORRERY_PROGRESS_URL`` = ``<progressUrl>/v1/progress/<Job
name>``) and records only its SHA-256 on the Job (annotation ``orrery.dev/progress-token``).
``orrery.workload`` POSTs its report there with the token as a bearer token. The agent
accepts it when the named Job is one of its own and the token's digest matches — so a
restarted agent needs no stored secret, and one slice can never report for another.
Bodies are bounded, reports validated, and the token never logged.

    POST /v1/progress/<job name>    Authorization: Bearer <token>    body: Progress JSON
        204 accepted · 400 not a report · 401 unknown attempt or wrong token · 413 too big
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import ValidationError

from orrery.wire import Progress

log = logging.getLogger("orrery.spoke.kubernetes")
MAX_BODY = 64 * 1024
PATH = "/v1/progress/"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, recorded: str | None) -> bool:
    return bool(recorded) and hmac.compare_digest(digest(token), str(recorded))


class ProgressEndpoint:
    """The listener. ``verify(job_name, token)``: is this the attempt's token?"""

    def __init__(self, listen: str, verify: Callable[[str, str], bool]) -> None:
        host, _, port = listen.rpartition(":")
        self._verify = verify
        self._lock = threading.Lock()
        self._latest: dict[str, Progress] = {}
        self.rejected = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a client that stalls mid-request holds one thread this long
            server_version = "orrery-spoke"

            def log_message(self, format: str, *args: object) -> None:
                return  # requests carry tokens: nothing of them goes to the log

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                self._answer(endpoint._handle(self))

        self.server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="orrery-progress", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def _handle(self, req: BaseHTTPRequestHandler) -> int:
        if not req.path.startswith(PATH):
            return 404
        name = req.path[len(PATH) :]
        auth = req.headers.get("Authorization", "")
        try:
            length = int(req.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return 413 if length > MAX_BODY else 400
        body = req.rfile.read(length)
        if not auth.startswith("Bearer ") or not self._verify(name, auth[7:].strip()):
            self.rejected += 1
            return 401
        try:
            data = json.loads(body)
            if isinstance(data, dict):
                data.pop("_written", None)
            report = Progress.model_validate(data)
        except (ValueError, ValidationError):
            return 400
        with self._lock:
            self._latest[name] = report
        return 204

    def get(self, name: str) -> Progress | None:
        with self._lock:
            return self._latest.get(name)

    def forget(self, name: str) -> None:
        with self._lock:
            self._latest.pop(name, None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
