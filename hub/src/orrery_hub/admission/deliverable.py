"""A job is admitted only if each of its slices could be sent.

An order goes to a spoke as one NATS message, and NATS refuses a message over its
``max_payload``. A manifest that validates can still make an Assignment too large to send
(a long environment, thousands of arguments): once placed, it would hold its GPUs and
never arrive. So ``check_deliverable`` builds the job's Assignment at submission, with
every field the hub fills in later at its largest (node name, GPUs, addresses, the last
checkpoint path, 64-bit epoch and sequence), validates it against the wire's own limits
and measures its encoding. Past ``MAX_ORDER_BYTES`` it is a 422 naming the fields to shrink.

Called by ``HubService.submit`` (``runtime.service``) and the policy check, before
anything is stored.
"""

from __future__ import annotations

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


def check_deliverable(manifest: JobManifest) -> int:
    """The largest encoded size of one of the job's orders, or ManifestError (a 422)."""
    try:
        size = len(encode(largest_assignment(manifest)))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(
            [("spec", f"cannot be sent to a spoke: {where}: {first['msg']}")]
        ) from None
    if size > MAX_ORDER_BYTES:
        raise ManifestError(
            [
                (
                    "spec",
                    f"each slice's assignment would be {size} bytes, over the {MAX_ORDER_BYTES}"
                    "-byte limit of one order (one NATS message); shrink spec.env or "
                    "spec.command",
                )
            ]
        )
    return size
