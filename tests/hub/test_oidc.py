"""OIDC: JWTs signed by a key this test makes, verified against a JWKS file, groups mapped
to roles and teams. Expired, wrong audience or issuer, another key, `alg: none` and a
tampered payload are 401; a valid identity in no mapped group is 403."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from orrery.errors import InvalidInput
from orrery.natsserver import NatsServer
from orrery_hub.auth.oidc import OidcSettings, load_groups
from orrery_hub.config.settings import HubSettings
from tests.conftest import ADMIN_TOKEN, FAST, running_hub

ISSUER = "https://idp.example.test"
AUDIENCE = "orrery"
JOB = (
    "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: oidc-job}\n"
    "spec: {gpusPerSlice: 1, command: ['true']}\n"
)
GROUPS = """
claim: groups
groups:
  - {group: ml-platform, role: admin}
  - {group: nlp-researchers, role: member, team: nlp}
  - {group: nlp-interns, role: viewer, team: nlp}
"""

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: Any = KEY, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = time.time()
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-123", "email": "ada@example.test",
            "iat": int(now), "exp": int(now + 300), "groups": ["nlp-researchers"], **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def api(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[httpx.AsyncClient]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    settings = HubSettings(state_dir=tmp_path / "hub", nats_url=nats_server.url, port=0,
                           timing=FAST, insecure=True, admin_token=ADMIN_TOKEN,
                           oidc=OidcSettings(ISSUER, AUDIENCE, str(jwks), groups))
    async with running_hub(settings) as h:
        assert h.endpoints is not None
        async with httpx.AsyncClient(base_url=h.endpoints.api_url) as c:
            yield c


def auth(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


async def test_groups_map_to_role_and_team(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/jobs", content=JOB, headers=auth(token()))
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["labels"] == {"team": "nlp"}  # the team from the group
    viewer = auth(token(groups=["nlp-interns"]))
    assert (await api.get("/v1/jobs", headers=viewer)).status_code == 200
    r = await api.post("/v1/jobs", content=JOB, headers=viewer)
    assert r.status_code == 403 and "jobs:submit" in r.text
    admin = auth(token(groups=["other", "ml-platform"]))
    assert (await api.get("/v1/tokens", headers=admin)).status_code == 200
    # The audit names the OIDC subject.
    rows = (await api.get("/v1/audit", headers=admin)).json()
    assert any("ada@example.test (oidc)" in a["detail"] for a in rows if a["kind"] == "auth")


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        pytest.param(lambda: token(exp=int(time.time()) - 120), "expired", id="expired"),
        pytest.param(lambda: token(aud="someone-else"), "audience", id="audience"),
        pytest.param(lambda: token(iss="https://evil.test"), "issuer", id="issuer"),
        pytest.param(lambda: token(key=OTHER), "Signature", id="another-key"),
        pytest.param(lambda: token(kid="k2"), "kid", id="unknown-kid"),
        pytest.param(lambda: jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x",
                                         "exp": int(time.time()) + 60,
                                         "groups": ["ml-platform"]}, None, algorithm="none",
                                        headers={"kid": "k1"}), "alg", id="alg-none"),
        pytest.param(lambda: _tampered(), "Signature", id="tampered"),
        pytest.param(lambda: token(exp=None), "exp", id="no-expiry"),
    ],
)
async def test_refused_tokens_are_401(api: httpx.AsyncClient, bad: Any, words: str) -> None:
    t = bad()
    r = await api.get("/v1/jobs", headers=auth(t))
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert words.lower() in r.json()["detail"].lower()
    assert t not in r.text


def _tampered() -> str:
    import base64

    head, payload, sig = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["ml-platform"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


async def test_a_valid_identity_in_no_mapped_group_is_403(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/jobs", headers=auth(token(groups=["marketing"])))
    assert r.status_code == 403 and "maps to a role" in r.json()["detail"]


def test_a_bad_groups_file_names_the_field(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("groups: [{group: x, role: member}]\n")
    with pytest.raises(InvalidInput, match=r"--oidc-groups: .*groups.0.*needs a team"):
        load_groups(f)
