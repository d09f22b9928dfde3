"""The CLI's config file: named contexts (hub URL, token, CA), one of them current — as
kubeconfig does it. ``ORRERY_CONFIG`` names the file; default
``$XDG_CONFIG_HOME/orrery/config.yaml`` (``~/.config/orrery/config.yaml``)::

    current-context: local
    contexts:
      - name: local
        hub: http://127.0.0.1:8080
        token: orr_0123456789abcdef.xxxxx
        ca: /path/to/ca.crt          # optional: verify an https hub against this CA

The file holds tokens, so it is written 0600. Flags and ``ORRERY_HUB``/``ORRERY_TOKEN``
win over the context; a context's token is never sent to a hub other than its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orrery.client import HubClient
from orrery.errors import InvalidInput
from orrery.hubaddress import DEFAULT_HUB


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    hub: str = Field(min_length=1, max_length=2048)
    token: str | None = Field(default=None, max_length=8192, repr=False)
    ca: str | None = None


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    current_context: str | None = Field(default=None, alias="current-context")
    contexts: list[Context] = Field(default_factory=list)

    def get(self, name: str | None) -> Context | None:
        return next((c for c in self.contexts if c.name == name), None)


def config_path() -> Path:
    env = os.environ.get("ORRERY_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orrery" / "config.yaml"


def load(path: Path | None = None) -> Config:
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise InvalidInput(f"orrery config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
        return Config.model_validate(data)
    except yaml.YAMLError:
        raise InvalidInput(f"orrery config {path}: not valid YAML") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "<document>"
        raise InvalidInput(f"orrery config {path}: {loc}: {first['msg']}") from None


def save(cfg: Config, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.model_dump(by_alias=True, exclude_none=True), sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    tmp.replace(path)
    return path


def set_context(ctx: Context, *, current: bool = True, path: Path | None = None) -> Path:
    """Add or replace the context named ``ctx.name`` (and make it current)."""
    cfg = load(path)
    cfg.contexts = [c for c in cfg.contexts if c.name != ctx.name] + [ctx]
    if current:
        cfg.current_context = ctx.name
    return save(cfg, path)


def current() -> Context | None:
    cfg = load()
    name = os.environ.get("ORRERY_CONTEXT") or cfg.current_context
    ctx = cfg.get(name)
    if name and ctx is None and os.environ.get("ORRERY_CONTEXT"):
        raise InvalidInput(f"ORRERY_CONTEXT: no context named {name!r} in {config_path()}")
    return ctx


def connect(hub: str | None, token: str | None) -> HubClient:
    """A client for ``hub``/``token`` as given, filling the gaps from the current context."""
    ctx = current()
    url = hub or (ctx.hub if ctx else None) or DEFAULT_HUB
    same_hub = ctx is not None and url.rstrip("/") == ctx.hub.rstrip("/")
    if token is None and ctx is not None and same_hub:
        token = ctx.token
    verify: str | bool = ctx.ca if ctx is not None and same_hub and ctx.ca else True
    return HubClient(url, token=token, verify=verify)
