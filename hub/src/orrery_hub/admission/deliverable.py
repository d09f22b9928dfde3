"""A job is admitted only if each of its slices could be sent.

An order goes to a spoke as one NATS message, and NATS refuses a message over its
``max_payload``. A manifest that validates can still make an Assignment too large to send
(a long environment, thousands of arguments): once placed, it would hold its GPUs and
never arrive. So ``check_deliverable`` builds the job's Assignment at submission, with
every field the hub fills in later at its largest (node name, GPUs, addresses, the last
checkpoint path, 64-bit epoch and sequence), validates it against the wire's own limits
and measures its encoding. Past ``MAX_ORDER_BYTES`` it is a 422 naming the fields to shrink.

Building and encoding that Assignment costs ~20 µs, most of a batch's admission work when
it is done for each of 1,000 jobs; but jobs submitted together mostly share one shape (a
sweep: the same command, image and env, other names). So the outcome is remembered per
shape: every field the Assignment is built from, the name by its length only (a DNS label
is ASCII and encodes as one byte a character; the wire bounds a name by length alone).

Called by ``HubService.submit`` (``runtime.service``) and the policy check, before
anything is stored.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from orrery.errors import ManifestError
from orrery.manifest import JobManifest
from orrery.wire import Assignment, encode
from orrery.wire.codec import MAX_ORDER_BYTES
from orrery.wire.messages import INT64_MAX, MAX_GPUS_PER_NODE, MAX_PATH
from orrery_hub.reconcile import split_env

_LONGEST_NAME = "n" * 253


def largest_assignment(manifest: JobManifest) -> Assignment:
    """The job's Assignment as large as the hub could ever make it. Raises ValidationError
    where the manifest does not fit the wire's limits at all."""
    spec = manifest.spec
    stored = manifest.model_dump(mode="json", by_alias=True, exclude_none=True)
    plain, secrets = split_env(stored["spec"].get("env", {}))
    return Assignment(
        sender="hub",
        seq=INT64_MAX,
        job=_LONGEST_NAME,
        job_name=manifest.metadata.name,
        index=INT64_MAX,
        epoch=INT64_MAX,
        world_size=spec.slices,
        node=_LONGEST_NAME,
        gpus=list(range(MAX_GPUS_PER_NODE)),
        master_addr=_LONGEST_NAME,
        master_port=65535,
        command=list(spec.command),
        image=spec.image,
        env=plain,
        secret_env=secrets or None,
        checkpoint_dir=spec.checkpoint_dir or "c" * MAX_PATH,
        checkpoint="c" * MAX_PATH,
        max_runtime_s=spec.max_runtime_s,
    )


def shape(manifest: JobManifest) -> tuple[Any, ...]:
    """What ``largest_assignment`` reads of ``manifest``: equal shapes, equal outcomes."""
    spec = manifest.spec
    env = tuple(
        (k, v) if isinstance(v, str) else (k, v.secret_ref, v.key) for k, v in spec.env.items()
    )
    name = manifest.metadata.name
    return (
        len(name) if name.isascii() else name,
        spec.slices,
        tuple(spec.command),
        spec.image,
        env,
        spec.checkpoint_dir,
        spec.max_runtime_s,
    )


def check_deliverable(manifest: JobManifest) -> int:
    """The largest encoded size of one of the job's orders, or ManifestError (a 422)."""
    key = shape(manifest)
    outcome = _OUTCOMES.get(key)
    if outcome is None:
        outcome = _measure(manifest)
        if len(_OUTCOMES) >= _REMEMBERED:
            _OUTCOMES.clear()
        _OUTCOMES[key] = outcome
    size, problem = outcome
    if problem is not None:
        raise ManifestError([("spec", problem)])
    return size


_REMEMBERED = 1024  # shapes; past that the memo starts again
_OUTCOMES: dict[tuple[Any, ...], tuple[int, str | None]] = {}


def _measure(manifest: JobManifest) -> tuple[int, str | None]:
    """The size of the largest order, and why it cannot be sent (None: it can)."""
    try:
        size = len(encode(largest_assignment(manifest)))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return 0, f"cannot be sent to a spoke: {where}: {first['msg']}"
    if size > MAX_ORDER_BYTES:
        return size, (
            f"each slice's assignment would be {size} bytes, over the {MAX_ORDER_BYTES}"
            "-byte limit of one order (one NATS message); shrink spec.env or spec.command"
        )
    return size, None
