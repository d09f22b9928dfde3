"""`orrery token create|list|revoke`, and how the CLI finds its hub and token: flags,
ORRERY_TOKEN, or the current context of the config file — against a real in-process hub."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from orrery_hub.main import Hub
from tests.clirunner import cli, completed
from tests.conftest import ADMIN_TOKEN

ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("ORRERY_HUB", "ORRERY_TOKEN")}
    return subprocess.run(
        [*ORRERY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "COLUMNS": "200", **env},
    )


async def arun(
    *args: str, env: dict[str, str], real: bool = False
) -> subprocess.CompletedProcess[str]:
    """In this process unless ``real`` (what only the console script shows: one line and
    no traceback for a user's mistake); on a thread either way, as the hub serves on
    this loop."""
    if real:
        return await asyncio.to_thread(run, *args, env=env)
    return completed(args, await asyncio.to_thread(cli, *args, env=env))


async def test_token_create_list_revoke_and_the_ways_to_pass_a_token(
    hub: Hub, tmp_path: Path
) -> None:
    assert hub.endpoints is not None
    url = hub.endpoints.api_url
    nocfg = {"ORRERY_CONFIG": str(tmp_path / "none.yaml")}
    admin = {**nocfg, "ORRERY_HUB": url, "ORRERY_TOKEN": ADMIN_TOKEN}

    # No token at all: one clear line, no traceback.
    p = await arun("jobs", "--hub", url, env=nocfg, real=True)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "no token" in p.stderr and "ORRERY_TOKEN" in p.stderr

    p = await arun(
        "token",
        "create",
        "--team",
        "nlp",
        "--role",
        "member",
        "--ttl",
        "30d",
        "--name",
        "alice",
        env=admin,
    )
    assert p.returncode == 0, p.stderr
    token = p.stdout.strip()  # stdout holds the token alone
    assert token.startswith("orr_") and "\n" not in token
    token_id = token[4:].split(".")[0]
    assert "role member, team nlp" in p.stderr and "Shown once" in p.stderr

    # A member may not create tokens: 403 naming the permission.
    p = await arun("token", "create", "--role", "admin", "--hub", url, "--token", token, env=nocfg)
    assert p.returncode != 0 and "tokens:admin" in p.stderr
    # Bad input is refused before it is sent, naming the field.
    p = await arun("token", "create", "--role", "member", env=admin, real=True)
    assert p.returncode == 2 and "team" in p.stderr and "Traceback" not in p.stderr

    # The member submits through ORRERY_TOKEN; the job lands in its team.
    job = tmp_path / "job.yaml"
    job.write_text(
        "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: mine}\n"
        "spec: {gpusPerSlice: 1, command: ['true']}\n"
    )
    member = {**nocfg, "ORRERY_HUB": url, "ORRERY_TOKEN": token}
    p = await arun("submit", str(job), env=member)
    assert p.returncode == 0, p.stderr
    job_id = p.stdout.split()[1]
    assert (await hub.get_job(job_id)).metadata["labels"] == {"team": "nlp"}

    # A context file: hub and token from the current context, no flags, no env.
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "current-context": "work",
                "contexts": [
                    {"name": "work", "hub": url, "token": token},
                    {"name": "other", "hub": "http://127.0.0.1:9", "token": "nope"},
                ],
            }
        )
    )
    p = await arun("jobs", env={"ORRERY_CONFIG": str(cfg)})
    assert p.returncode == 0 and job_id in p.stdout, p.stderr
    # The context's token is not sent to a hub the context does not name.
    p = await arun(
        "jobs", "--hub", url.replace("127.0.0.1", "localhost"), env={"ORRERY_CONFIG": str(cfg)}
    )
    assert p.returncode != 0 and "no token" in p.stderr

    p = await arun("token", "list", env=admin)
    assert p.returncode == 0 and token_id in p.stdout and "alice" in p.stdout
    assert token.split(".")[1] not in p.stdout  # never the secret
    p = await arun("token", "list", "-o", "json", env=admin)
    listed = {t["id"]: t for t in json.loads(p.stdout)["items"]}
    assert listed[token_id]["team"] == "nlp" and listed[token_id]["role"] == "member"
    assert token.split(".")[1] not in p.stdout
    p = await arun("token", "list", "-o", "name", env=admin)
    assert token_id in p.stdout.split()

    p = await arun("token", "revoke", token_id, env=admin)
    assert p.returncode == 0 and "revoked" in p.stdout
    p = await arun("jobs", env={"ORRERY_CONFIG": str(cfg)}, real=True)
    assert p.returncode != 0 and "revoked" in p.stderr and "Traceback" not in p.stderr


async def test_config_contexts(hub: Hub, tmp_path: Path) -> None:
    assert hub.endpoints is not None
    cfg = {"ORRERY_CONFIG": str(tmp_path / "cfg" / "config.yaml")}
    secret = tmp_path / "token"
    secret.write_text(ADMIN_TOKEN + "\n")
    p = await arun("config", "set-context", "prod", "--hub", hub.endpoints.api_url,
                   "--token-file", str(secret), env=cfg)
    assert p.returncode == 0, p.stderr
    p = await arun("config", "set-context", "dev", "--hub", "http://127.0.0.1:9",
                   "--no-current", env=cfg)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cfg" / "config.yaml").stat().st_mode & 0o777 == 0o600
    p = await arun("config", "get-contexts", env=cfg)
    assert "* " in p.stdout and "prod" in p.stdout and "dev" in p.stdout
    assert ADMIN_TOKEN not in p.stdout
    p = await arun("config", "get-contexts", "-o", "json", env=cfg)
    shown = {c["name"]: c for c in json.loads(p.stdout)["items"]}
    assert shown["prod"]["current"] and shown["prod"]["tokenSet"]
    assert not shown["dev"]["current"] and not shown["dev"]["tokenSet"]
    assert ADMIN_TOKEN not in p.stdout
    p = await arun("config", "get-contexts", "-o", "name", env=cfg)
    assert p.stdout.split() == ["prod", "dev"]
    p = await arun("clusters", env=cfg)  # the current context: prod, with its token
    assert p.returncode == 0, p.stderr
    p = await arun("config", "use-context", "nope", env=cfg)
    assert p.returncode == 2 and "no context named 'nope'" in p.stderr
    p = await arun("config", "use-context", "dev", env=cfg)
    assert p.returncode == 0
    p = await arun("clusters", env=cfg)
    assert p.returncode != 0 and "cannot reach the hub at http://127.0.0.1:9" in p.stderr
    p = await arun("clusters", env={**cfg, "ORRERY_CONTEXT": "prod"})
    assert p.returncode == 0, p.stderr
