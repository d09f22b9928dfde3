"""Guardrail priority ceilings (maxPriority) and queue binding (queues), in the pure engine
and through the API where the team comes from the token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orrery.natsserver import NatsServer
from orrery_hub.config.settings import HubSettings
from orrery_hub.policy import NO_USAGE, admit
from tests.conftest import ADMIN, ADMIN_TOKEN, FAST, running_hub
from tests.hub.test_policy_helpers import job, policies

NOW = 1_700_000_000.0
NLP = "Guardrail nlp: {match: {team: nlp}, maxPriority: 100, queues: [research, nlp-batch]}"


@pytest.mark.parametrize(
    ("priority", "queue", "denials"),
    [
        pytest.param(100, "research", [], id="at-the-ceiling"),
        pytest.param(101, "research", ["guardrail/nlp: asks for priority 101; at most 100"],
                     id="over-the-ceiling"),
        pytest.param(0, "default", ["guardrail/nlp: uses queue default; team nlp may use "
                                    "nlp-batch, research"], id="another-queue"),
        pytest.param(5000, "prod", ["guardrail/nlp: asks for priority 5000; at most 100",
                                    "guardrail/nlp: uses queue prod; team nlp may use "
                                    "nlp-batch, research"], id="both"),
    ],
)
def test_ceiling_and_queues(priority: int, queue: str, denials: list[str]) -> None:
    a = admit(job(labels={"team": "nlp"}, priority=priority, queue=queue), policies(NLP),
              NO_USAGE, NOW)
    assert [f"{p}: {r}" for p, r in a.denials] == denials
    assert a.admitted == (not denials)


def test_other_teams_are_not_bound() -> None:
    a = admit(job(labels={"team": "vision"}, priority=10**6, queue="prod"), policies(NLP),
              NO_USAGE, NOW)
    assert a.admitted


def test_a_guardrail_with_only_a_ceiling_is_valid_and_an_empty_one_is_not() -> None:
    from orrery.errors import ManifestError

    assert policies("Guardrail p: {maxPriority: 5}").guardrails[0].max_priority == 5
    with pytest.raises(ManifestError, match="maxPriority, queues"):
        policies("Guardrail p: {match: {team: x}}")


async def test_a_member_cannot_relabel_its_way_past_its_team_guardrail(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "g.yaml").write_text(
        "apiVersion: orrery/v1\nkind: Guardrail\nmetadata: {name: nlp}\n"
        "spec: {match: {team: nlp}, maxPriority: 100, queues: [research]}\n"
    )
    settings = HubSettings(state_dir=tmp_path / "hub", nats_url=nats_server.url, port=0,
                           timing=FAST, insecure=True, admin_token=ADMIN_TOKEN,
                           policies_dir=folder)
    body = ("apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {{name: p{labels}}}\n"
            "spec: {{queue: {queue}, priority: {priority}, gpusPerSlice: 1, command: [x]}}\n")
    async with running_hub(settings) as h:
        assert h.endpoints is not None
        async with httpx.AsyncClient(base_url=h.endpoints.api_url) as api:
            r = await api.post("/v1/tokens", json={"role": "member", "team": "nlp"},
                               headers=ADMIN)
            member = {"Authorization": f"Bearer {r.json()['token']}"}

            async def submit(labels: str = "", queue: str = "research", priority: int = 0,
                             ) -> httpx.Response:
                text = body.format(labels=labels, queue=queue, priority=priority)
                return await api.post("/v1/jobs", content=text, headers=member)

            assert (await submit(priority=100)).status_code == 201
            r = await submit(priority=1_000_000)
            assert r.status_code == 403 and "priority 1000000; at most 100" in r.text
            r = await submit(queue="prod")
            assert r.status_code == 403 and "uses queue prod" in r.text
            # Writing another team into the label is refused, not a way out.
            r = await submit(labels=", labels: {team: vision}", priority=1_000_000)
            assert r.status_code == 403 and "metadata.labels.team" in r.text
