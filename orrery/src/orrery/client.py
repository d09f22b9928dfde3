"""HTTP client for the hub's REST API (httpx). What the CLI uses; scripts may too.

``HubClient`` holds the API's resources (jobs, datasets, clusters, policies, tokens ...);
how a request reaches the hub, follows a leader and fails is ``hubtransport``'s, and
where the hub is (``DEFAULT_HUB``, ``--hub``) ``hubaddress``'s. Errors come back as Orrery
errors: an unreachable hub is ``Unavailable`` (retryable), a refused manifest
``ManifestError`` with each field, an unknown job ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import ValidationError

from orrery.access import TokenCreated, TokenRequest, TokenView
from orrery.errors import (
    InvalidInput,
    NotFound,
    Unavailable,
)
from orrery.hubtransport import HubTransport
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

EVENT_PAGES = 50  # at most this many pages of a job's events are read for one view


class HubClient(HubTransport):
    """The hub's REST API by resource: jobs, their events, attempts and logs; datasets;
    clusters, usage, policies and audit; API tokens."""

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
