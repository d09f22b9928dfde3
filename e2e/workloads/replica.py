"""A small inference replica for the serving tests: stdlib HTTP on $PORT.

    GET /healthz          200 once listening (the readinessPath)
    GET /work?ms=50       sleeps ms (default 50) holding one of $SLOTS slots (default 4: a
                          model serving a batch of 4), answers {"replica", "pid", "inflight"}
    GET /stream?n=5       server-sent events: n token events, one every 20 ms, chunked
    POST /echo            the body back

Reports its own load through ``orrery.workload.load`` (requests in flight as the queue
depth), as an LLM server would report its queue and KV cache.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

try:
    from orrery import workload
except ImportError:  # run outside Orrery: no reports
    workload = None  # type: ignore[assignment]

LOCK = threading.Lock()
SLOTS = threading.Semaphore(int(os.environ.get("SLOTS", "4")))
INFLIGHT = 0
NAME = os.environ.get("ORRERY_JOB_NAME", "local")


def _load() -> None:
    if workload is not None:
        workload.load(queue_depth=float(INFLIGHT), kv_cache=min(1.0, INFLIGHT / 32))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, Nagle holds the body until
        # the client's delayed ACK (~40 ms a request).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, code: int, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        global INFLIGHT
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path == "/healthz":
            self._json(200, {"ok": True})
            return
        if url.path == "/work":
            with LOCK:
                INFLIGHT += 1
                seen = INFLIGHT
            _load()
            try:
                with SLOTS:
                    time.sleep(float(q.get("ms", ["50"])[0]) / 1000)
                self._json(200, {"replica": NAME, "pid": os.getpid(), "inflight": seen})
            finally:
                with LOCK:
                    INFLIGHT -= 1
            return
        if url.path == "/stream":
            n = int(q.get("n", ["5"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                event = f"data: token-{i}\n\n".encode()
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
            return
        self._json(404, {"detail": "no such path"})

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main() -> None:
    port = int(os.environ.get("PORT", sys.argv[1] if len(sys.argv) > 1 else "0"))
    server = Server(("0.0.0.0", port), Handler)
    print(f"replica {NAME} listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
