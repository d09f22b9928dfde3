"""HTTP client for the hub's REST API (httpx). What the CLI uses; scripts may too.

Errors come back as Orrery errors: an unreachable hub is ``Unavailable`` (retryable), a
refused manifest ``ManifestError`` with each field, an unknown job ``NotFound``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from orrery.access import TokenCreated, TokenRequest, TokenView
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
from orrery.resources import (
    AttemptView,
    ClusterList,
    ClusterPublic,
    DatasetList,
    DatasetPublic,
    EventView,
    JobBatch,
    JobList,
    JobPublic,
)

DEFAULT_HUB = "http://127.0.0.1:8080"


def hub_url(url: str) -> str:
    """A hub URL as a user types it: ``127.0.0.1:8080`` means ``http://127.0.0.1:8080``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https") or not url.split("://", 1)[1]:
        raise InvalidInput(
            f"--hub: {url!r} is not a hub URL: expected http://HOST:PORT or https://HOST"
        )
    return url


def hub_urls(urls: str) -> list[str]:
    """``--hub`` / ``ORRERY_HUB``: one hub URL, or several separated by commas (a leader
    and its standbys; the client follows to whichever leads)."""
    out = [hub_url(u) for u in urls.split(",") if u.strip()]
    if not out:
        raise InvalidInput("--hub: no hub URL given")
    return out


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


EVENT_PAGES = 50  # at most this many pages of a job's events are read for one view


class HubClient:
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

    def __enter__(self) -> HubClient:
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

    def submit(self, manifest_text: str) -> JobPublic:
        r = self._request(
            "POST",
            "/v1/jobs",
            idempotent=False,
            content=manifest_text.encode(),
            headers={"content-type": "application/yaml"},
        )
        return JobPublic.model_validate(r.json())

    def submit_batch(self, documents: list[Any]) -> JobBatch:
        """Submit parsed manifests in one request; each is admitted or refused on its own."""
        r = self._request("POST", "/v1/jobs:batch", idempotent=False, json=documents)
        return JobBatch.model_validate(r.json())

    def job(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(
            self._request("GET", f"/v1/jobs/{job_id}", idempotent=True).json()
        )

    def jobs(
        self,
        *,
        phase: str | None = None,
        limit: int | None = None,
        filters: dict[str, str] | None = None,
    ) -> list[JobPublic]:
        """Newest first. ``filters`` (queue, team, name, label) are sent as query
        parameters for a hub that filters; the CLI filters what comes back as well."""
        params = {k: v for k, v in {"phase": phase, **(filters or {})}.items() if v}
        if limit is not None:
            params["limit"] = str(limit)
        r = self._request("GET", "/v1/jobs", idempotent=True, params=params)
        return JobList.model_validate(r.json()).items

    def find_job(self, ref: str) -> JobPublic:
        """A job by ID, or by name where exactly one job has it (as ``kubectl`` and
        ``sky`` let a user type what they named it). Ambiguous: InvalidInput listing them."""
        try:
            return self.job(ref)
        except NotFound:
            named = [
                j
                for j in self.jobs(filters={"name": ref}, limit=10_000)
                if j.metadata.get("name") == ref
            ]
            if len(named) == 1:
                return named[0]
            if not named:
                raise
            ids = ", ".join(j.id for j in named[:10]) + (" ..." if len(named) > 10 else "")
            raise InvalidInput(
                f"{ref!r} names {len(named)} jobs ({ids}): give one of their IDs"
            ) from None

    def cancel(self, job_id: str) -> JobPublic:
        r = self._request("DELETE", f"/v1/jobs/{job_id}", idempotent=False)
        return JobPublic.model_validate(r.json())

    def events(
        self, job_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[EventView]:
        """One page of a job's events, oldest first (those after the cursor ``after``)."""
        params = {k: str(v) for k, v in (("after", after), ("limit", limit)) if v is not None}
        r = self._request("GET", f"/v1/jobs/{job_id}/events", idempotent=True, params=params)
        return [EventView.model_validate(e) for e in r.json()]

    def all_events(self, job_id: str) -> list[EventView]:
        """Every event of a job, page after page (bounded: ``EVENT_PAGES`` pages)."""
        out: list[EventView] = []
        after: int | None = None
        for _ in range(EVENT_PAGES):
            page = self.events(job_id, after=after)
            out += page
            if not page or page[-1].id is None or page[-1].id == after:
                break
            after = page[-1].id
        return out

    def attempts(self, job_id: str) -> list[AttemptView]:
        r = self._request("GET", f"/v1/jobs/{job_id}/attempts", idempotent=True)
        return [AttemptView.model_validate(e) for e in r.json()]

    def apply_dataset(self, manifest_text: str) -> DatasetPublic:
        """Create a dataset, or replace its definition (``kind: Dataset``)."""
        r = self._request(
            "POST",
            "/v1/datasets",
            idempotent=True,  # the same definition twice is one dataset
            content=manifest_text.encode(),
            headers={"content-type": "application/yaml"},
        )
        return DatasetPublic.model_validate(r.json())

    def datasets(self) -> list[DatasetPublic]:
        r = self._request("GET", "/v1/datasets", idempotent=True)
        return DatasetList.model_validate(r.json()).items

    def dataset(self, name: str) -> DatasetPublic:
        r = self._request("GET", f"/v1/datasets/{name}", idempotent=True)
        return DatasetPublic.model_validate(r.json())

    def delete_dataset(self, name: str) -> DatasetPublic:
        r = self._request("DELETE", f"/v1/datasets/{name}", idempotent=False)
        return DatasetPublic.model_validate(r.json())

    def logs(
        self,
        job_id: str,
        *,
        slice: int | None = None,
        epoch: int | None = None,
        follow: bool = False,
        tail: int | None = None,
    ) -> Iterator[bytes]:
        """A job's output as the hub streams it (``GET /v1/jobs/{id}/logs``), chunk by
        chunk; following, until the attempt ends (no read timeout: a quiet slice is fine)."""
        params: dict[str, Any] = {"follow": follow}
        params |= {
            k: v for k, v in (("slice", slice), ("epoch", epoch), ("tail", tail)) if v is not None
        }
        timeout = httpx.Timeout(10.0, read=None if follow else 60.0)
        try:
            with self._http.stream(
                "GET", f"/v1/jobs/{job_id}/logs", params=params, timeout=timeout
            ) as r:
                ctype = r.headers.get("content-type", "")
                if r.status_code >= 400 or not ctype.startswith("text/plain"):
                    r.read()
                    self._raise_for(r)
                    self._not_a_hub(r)  # a 2xx that is not our text: a wrong --hub
                yield from r.iter_bytes()
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the hub at {self.base_url} stopped answering ({type(exc).__name__})"
            ) from None

    def clusters(self) -> list[ClusterPublic]:
        r = self._request("GET", "/v1/clusters", idempotent=True)
        return ClusterList.model_validate(r.json()).items

    def usage(self, *, team: str | None = None, since: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("team", team), ("since", since)) if v is not None}
        r = self._request("GET", "/v1/usage", idempotent=True, params=params)
        return dict(r.json())

    def policies(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/policies", idempotent=True).json())

    def reload_policies(self) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/policies:reload", idempotent=False).json())

    def check_policy(self, manifest_text: str) -> dict[str, Any]:
        r = self._request(
            "POST", "/v1/policies:check", idempotent=True, json={"manifest": manifest_text}
        )
        return dict(r.json())

    def audit(self, *, job: str | None = None) -> list[dict[str, Any]]:
        params = {"job": job} if job else {}
        return list(self._request("GET", "/v1/audit", idempotent=True, params=params).json())

    # ---- API tokens (admin) ------------------------------------------------------------

    def create_token(
        self, *, role: str, team: str | None = None, name: str = "", ttl: str | None = None
    ) -> TokenCreated:
        try:
            req = TokenRequest.model_validate(
                {"role": role, "team": team, "name": name, "ttl": ttl}
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise InvalidInput(f"{loc}: {msg}" if loc else msg) from None
        r = self._request(
            "POST",
            "/v1/tokens",
            idempotent=False,
            json=req.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        return TokenCreated.model_validate(r.json())

    def tokens(self) -> list[TokenView]:
        r = self._request("GET", "/v1/tokens", idempotent=True)
        return [TokenView.model_validate(t) for t in r.json()]

    def revoke_token(self, token_id: str) -> TokenView:
        r = self._request("DELETE", f"/v1/tokens/{token_id}", idempotent=False)
        return TokenView.model_validate(r.json())

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False
