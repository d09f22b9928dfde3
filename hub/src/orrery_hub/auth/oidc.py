"""Optional OIDC: accept JWTs an identity provider signed, and map their groups to a role
and team (as Armada maps OIDC groups to its verbs).

Configured by four hub flags together: ``--oidc-issuer``, ``--oidc-audience``,
``--oidc-jwks`` (a JWKS file, or an https URL fetched and cached) and ``--oidc-groups``,
a YAML file::

    claim: groups            # the claim that lists the user's groups (default: groups)
    groups:                  # first entry matching one of the user's groups wins
      - {group: ml-platform, role: admin}
      - {group: sre, role: operator}
      - {group: nlp-researchers, role: member, team: nlp}
      - {group: nlp-interns, role: viewer, team: nlp}

A token is accepted when its signature verifies against the JWKS, ``iss`` and ``aud``
match, and it has not expired (``exp`` is required). A valid token whose groups map to no
role is a 403: the hub knows who it is, and that it may do nothing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orrery.errors import Forbidden, InvalidInput, Unauthenticated
from orrery.names import check_dns_label
from orrery_hub.auth.roles import TEAM_SCOPED, Principal, Role

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
LEEWAY_S = 30.0  # clock skew between the identity provider and the hub


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: str
    jwks: str  # a file path, or an http(s) URL
    groups_file: Path


class GroupRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(min_length=1, max_length=256)
    role: Role
    team: str | None = None

    @model_validator(mode="after")
    def _scope(self) -> GroupRule:
        if self.role in TEAM_SCOPED:
            if self.team is None:
                raise ValueError(f"a {self.role.value} needs a team")
            check_dns_label(self.team)
        elif self.team is not None:
            raise ValueError(f"a {self.role.value} reaches every team; give no team")
        return self


class GroupMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: str = Field(default="groups", min_length=1, max_length=128)
    groups: list[GroupRule] = Field(min_length=1, max_length=10_000)

    def principal(self, claims: dict[str, Any]) -> Principal:
        sub = str(claims.get("sub") or "")
        who = str(claims.get("email") or claims.get("preferred_username") or sub)[:128]
        raw = claims.get(self.claim) or []
        groups = {raw} if isinstance(raw, str) else {str(g) for g in raw if isinstance(g, str)}
        for rule in self.groups:
            if rule.group in groups:
                return Principal(
                    token_id=f"oidc:{sub}"[:128], role=rule.role, team=rule.team,
                    subject=f"{who} (oidc)",
                )
        raise Forbidden(
            f"OIDC identity {who!r} is valid, but none of its groups maps to a role on this hub"
        )


def load_groups(path: Path) -> GroupMap:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"--oidc-groups: {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise InvalidInput(f"--oidc-groups: {path}: not valid YAML") from None
    try:
        return GroupMap.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"]) or "<document>"
        msg = str(e["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"--oidc-groups: {path}: {loc}: {msg}") from None


class OidcVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self.groups = load_groups(settings.groups_file)
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        src = settings.jwks
        if src.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(src, cache_keys=True, lifespan=300, timeout=5)
        else:
            try:
                self._keys = jwt.PyJWKSet.from_json(Path(src).read_text())
            except OSError as exc:
                raise InvalidInput(f"--oidc-jwks: {src}: {exc.strerror}") from None
            except (jwt.PyJWKSetError, json.JSONDecodeError, ValueError) as exc:
                raise InvalidInput(f"--oidc-jwks: {src}: not a usable JWKS ({exc})") from None

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and token.startswith("ey")

    async def _key(self, token: str) -> Any:
        if self._client is not None:
            # The fetch is blocking IO: off the event loop.
            return (await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for k in self._keys.keys:
            if kid is None or k.key_id == kid:
                return k.key
        raise jwt.InvalidTokenError("no key in the JWKS matches the token's kid")

    async def verify(self, token: str, now: float) -> Principal | None:
        """A Principal, None if ``token`` is not a JWT, or Unauthenticated/Forbidden."""
        if not self.looks_like_jwt(token):
            return None
        try:
            key = await self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("OIDC token expired") from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise Unauthenticated(f"OIDC token refused: {exc}") from None
        return self.groups.principal(claims)
