"""Secrets by reference on a real federation: a member's job names a secret, the spoke
reads it from its --secrets-dir and the slice sees the value; the value is in no log, no
database row and no API answer; a secret the cluster lacks fails the job naming it."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import yaml

from e2e.conftest import final, spokes
from orrery.client import HubClient

VALUE = "hf_e2e-SECRET-value-9f8e7d"


def job(name: str, ref: str, max_retries: int = 0) -> str:
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    # The slice checks the value by its hash, so the value itself is in no command line.
    code = (
        "import hashlib, os, sys; v = os.environ.get('HF_TOKEN', '');"
        f"sys.exit(0 if hashlib.sha256(v.encode()).hexdigest() == {digest!r} else 3)"
    )
    return yaml.safe_dump({
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "gpusPerSlice": 1,
            "maxRetries": max_retries,
            "command": [sys.executable, "-c", code],
            "env": {"HF_TOKEN": {"secretRef": ref}, "PLAIN": "x"},
        },
    })


def test_a_secret_reaches_the_slice_and_nothing_else(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "hf").write_text(VALUE + "\n")
    fed = federation(spokes("eu-west"), extra_env={"ORRERY_SECRETS_DIR": str(secrets)})
    with fed.client() as admin:
        member_token = admin.create_token(role="member", team="nlp").token
        assert fed.api_url is not None
        with HubClient(fed.api_url, token=member_token) as c:
            ok = c.submit(job("with-secret", "hf"))
            done = final(c, ok.id)
            assert done.status.phase == "Succeeded", done.status.reason
            assert done.spec["env"]["HF_TOKEN"] == {"secretRef": "hf"}
            assert done.metadata["labels"] == {"team": "nlp"}
            missing = c.submit(job("no-secret", "wandb"))
            failed = final(c, missing.id)
            assert failed.status.phase == "Failed"
            assert "secret 'wandb'" in (failed.status.reason or "") or any(
                "secret 'wandb'" in (a.reason or "") for a in c.attempts(missing.id)
            ), failed.model_dump_json()
            answers = [c.job(ok.id).model_dump_json(), str(c.events(ok.id)),
                       str(c.attempts(ok.id)), str(admin.audit())]
            assert not any(VALUE in a for a in answers)
    fed.stop()
    # Nothing the federation wrote holds the value but the attempt's launch record, which
    # hands it to the supervisor (0600, in a 0700 folder, removed with the attempt).
    holders = [
        p.relative_to(fed.state)
        for p in fed.state.rglob("*")
        if p.is_file() and VALUE.encode() in p.read_bytes()
    ]
    assert all(p.name == "launch.json" for p in holders), holders
