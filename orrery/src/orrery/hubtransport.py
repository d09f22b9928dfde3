"""How the HTTP client reaches the hub: connection, failover to the leader, errors.

``HubTransport`` sends one request to whichever of the ``--hub`` URLs leads (a standby's
503 names the leader), retries the idempotent ones while the hub is unreachable, and turns
every refusal into an Orrery error: an unreachable hub is ``Unavailable`` (retryable; a
refused connection ``NotSent``), a refused manifest ``ManifestError`` with each field, an
unknown job ``NotFound``, an answer that is not the hub's JSON a message saying what
answered. ``client.HubClient`` adds the API's resources on top.
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Self

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from orrery.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    ManifestError,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from orrery.hubaddress import DEFAULT_HUB, hub_urls

# How long a client keeps trying while the hubs hand over leadership (a standby that knows
# no leader yet answers 503): longer than a leader lease and a standby's poll.
FAILOVER_WAIT_S = 15.0


def describe_body(r: httpx.Response) -> str:
    """A few words on a non-JSON answer: its type and, for a web page, its title."""
    ctype = r.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    text = r.text[:4000] if r.content else ""
    if not text.strip():
        return "an empty body"
    low = text.lower()
    start, end = low.find("<title>"), low.find("</title>")
    if 0 <= start < end:
        title = " ".join(text[start + 7 : end].split())[:80]
        return f"a web page ({ctype}) titled {title!r}"
    return f"{ctype} ({len(r.content)} bytes)"


PolicyDenied = Forbidden  # 403: policies refuse the job; the message names each and why


class NotSent(Unavailable):
    """The hub refused the connection: the request never left, so even a submit may be
    sent again without running the job twice."""


class HubTransport:
    def __init__(
        self,
        base_url: str = DEFAULT_HUB,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        verify: str | bool = True,
        failover_wait_s: float = FAILOVER_WAIT_S,
    ) -> None:
        self.urls = hub_urls(base_url)
        self.base_url = self.urls[0]  # the hub this client talks to now
        self.failover_wait_s = failover_wait_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        tls: ssl.SSLContext | bool = verify if isinstance(verify, bool) else True
        if isinstance(verify, str):
            # A context's CA file (an https hub with a certificate of its own CA).
            try:
                tls = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInput(f"ca: cannot load the hub CA {verify}: {exc}") from None
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers=headers,
            verify=tls,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _not_a_hub(self, r: httpx.Response) -> None:
        """Refuse an answer that is not the hub API's JSON (a web page, a proxy's error, an
        empty body): a wrong ``--hub`` says what answered, never its raw HTML."""
        ctype = r.headers.get("content-type", "").split(";")[0].strip()
        if "json" in ctype:
            return
        what = describe_body(r)
        if r.status_code >= 500:
            raise Unavailable(
                f"{self.base_url} answered {r.status_code} with {what}: the hub failing, or a "
                "proxy in front of it"
            )
        raise Unavailable(
            f"{self.base_url} is not an Orrery hub: {r.request.method} {r.request.url.path} "
            f"answered {r.status_code} with {what}, expected the hub API's JSON "
            f"(is --hub / ORRERY_HUB the hub's API URL, e.g. {DEFAULT_HUB}?)"
        )

    def _raise_for(self, r: httpx.Response) -> None:
        self._not_a_hub(r)
        if r.status_code < 400:
            return
        try:
            body = r.json()
        except ValueError:
            body = {"detail": r.text[:500]}
        detail = body.get("detail") if isinstance(body, dict) else str(body)
        if not isinstance(detail, str):
            detail = str(detail)
        if r.status_code == 422 and isinstance(body, dict) and body.get("fields"):
            raise ManifestError([(f["field"], f["reason"]) for f in body["fields"]])
        if r.status_code == 422:
            raise InvalidInput(detail)
        if r.status_code == 401:
            raise Unauthenticated(
                f"the hub refused the credentials: {detail} (set --token or ORRERY_TOKEN, "
                "or a context in the orrery config)"
            )
        if r.status_code == 429:
            try:
                wait = float(r.headers.get("retry-after", "1"))
            except ValueError:
                wait = 1.0
            raise TooManyRequests(f"the hub is rate-limiting this token: {detail}", wait)
        if r.status_code == 404 and detail == "Not Found":
            # FastAPI's answer for a path it has no route for, not a missing job.
            raise NotFound(
                f"{self.base_url} has no {r.request.url.path}: is --hub / ORRERY_HUB the "
                f"hub's root URL (e.g. {DEFAULT_HUB}), and is the hub this CLI's version?"
            )
        if r.status_code == 404:
            raise NotFound(detail)
        if r.status_code == 410:
            raise Gone(detail)
        if r.status_code == 503:
            raise Unavailable(detail)
        if r.status_code == 409:
            raise Conflict(detail)
        if r.status_code == 403:
            raise PolicyDenied(detail)
        if r.status_code >= 500:
            raise Unavailable(f"hub error {r.status_code}: {detail}")
        raise InvalidInput(f"hub refused the request ({r.status_code}): {detail}")

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request, to the leader: a standby's 503 names it (``X-Orrery-Leader``) and
        the request goes there; a hub that cannot be connected to (nothing was sent) or a
        standby that knows no leader yet (a handover) sends it to the next URL of ``--hub``,
        until one answers or ``failover_wait_s`` passes."""
        deadline = time.monotonic() + self.failover_wait_s
        hops = 0
        while True:
            hops += 1
            try:
                r = self._http.request(method, self.base_url + path, **kw)
            except httpx.InvalidURL as exc:
                raise InvalidInput(f"--hub: {self.base_url!r} is not a valid URL: {exc}") from None
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Never connected, so never sent: safe to send elsewhere, writes included.
                if len(self.urls) > 1 and time.monotonic() < deadline:
                    self._next_url(pause=hops % len(self.urls) == 0)
                    continue
                raise self._unreachable(exc) from None
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            if r.status_code != 503 or not r.headers.get("x-orrery-standby"):
                return r
            leader = r.headers.get("x-orrery-leader")
            if leader and leader != self.base_url and hops <= 2 * len(self.urls) + 2:
                self.base_url = leader
                continue
            if time.monotonic() >= deadline:
                return r  # the standby's own answer says why
            self._next_url(pause=True)

    def _next_url(self, *, pause: bool) -> None:
        if self.base_url in self.urls:
            i = self.urls.index(self.base_url)
            self.base_url = self.urls[(i + 1) % len(self.urls)]
        else:
            self.base_url = self.urls[0]
        if pause:
            time.sleep(0.2)  # every hub tried: a handover is under way

    def _unreachable(self, exc: Exception) -> Unavailable:
        where = ", ".join(self.urls) if len(self.urls) > 1 else self.base_url
        # Refused connections: the request never left (a submit may be sent again).
        kind = NotSent if isinstance(exc, httpx.ConnectError) else Unavailable
        return kind(
            f"cannot reach the hub at {where} ({type(exc).__name__}); is it running? "
            "(set --hub or ORRERY_HUB)"
        )

    def _request(self, method: str, path: str, *, idempotent: bool, **kw: Any) -> httpx.Response:
        def once() -> httpx.Response:
            return self._send(method, path, **kw)

        if not idempotent:
            r = once()
        else:
            r = Retrying(
                stop=stop_after_attempt(3),
                wait=wait_random_exponential(multiplier=0.1, max=1),
                retry=retry_if_exception_type(Unavailable),
                reraise=True,
            )(once)
        self._raise_for(r)
        return r

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False
