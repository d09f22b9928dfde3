"""``orrery spoke``: one spoke agent. Registered into the ``orrery`` CLI through the
``orrery.commands`` entry point, so the core CLI never imports the agent."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orrery import logs, timing
from orrery.dataset import parse_size
from orrery.errors import InvalidInput, OrreryError
from orrery.wire.subjects import valid_cluster_name

if TYPE_CHECKING:
    from orrery.clusterid import SpokeIdentity


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--label: {p!r} is not KEY=VALUE")
        out[key] = value
    return out


def _identity(
    state_dir: Path,
    cluster: str,
    join: str | None,
    token: str | None,
    nats: str | None,
    said: dict[str, str],
    ca_hash: str | None = None,
) -> tuple[SpokeIdentity, str, dict[str, str]]:
    """This spoke's enrolled identity (enrolling first with --join/--token when it has none),
    the NATS URL to use, and the labels to report: the ones the admin bound at enrollment."""
    from orrery.clusterid import SpokeIdentity

    ident = SpokeIdentity.under(state_dir)
    if not ident.exists():
        if not join or not token:
            raise InvalidInput(
                f"--join/--token: cluster {cluster!r} has no identity under {ident.root}; "
                "enroll it with `--join HUB_URL --token T` (`orrery cluster token create "
                f"{cluster}` on the hub), or run with --insecure for development"
            )
        ident.join(join, token, cluster, ca_hash=ca_hash)
    info = ident.info()
    if info.get("cluster") != cluster:
        raise InvalidInput(
            f"--cluster: {cluster!r}, but {ident.root} holds the identity of {info.get('cluster')!r}"
        )
    bound: dict[str, str] = dict(info.get("labels") or {})
    ignored = {k: v for k, v in said.items() if bound.get(k) != v}
    if ignored:
        logging.getLogger("orrery.spoke").warning(
            "labels differ from the enrolled ones and are ignored",
            extra={"cluster": cluster, "ignored": ignored, "enrolled": bound},
        )
    url = nats or next(iter(info.get("natsUrls") or []), None)
    if url is None:
        raise InvalidInput("--nats: the hub gave no NATS URL at enrollment; pass one")
    return ident, url, bound


def cache_limit(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise InvalidInput(f"--data-cache-limit: {exc}") from None


def command(app: typer.Typer) -> None:
    @app.command("spoke")
    def spoke(
        cluster: Annotated[str, typer.Option(envvar="ORRERY_CLUSTER", help="this cluster's name")],
        nats: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_NATS", help="NATS URL of the hub; default: the enrolled one"
            ),
        ] = None,
        region: Annotated[
            str | None, typer.Option(envvar="ORRERY_REGION", help="region label")
        ] = None,
        label: Annotated[
            list[str] | None, typer.Option(envvar="ORRERY_LABEL", help="KEY=VALUE, repeatable")
        ] = None,
        executor: Annotated[
            str, typer.Option(envvar="ORRERY_EXECUTOR", help="local or kubernetes")
        ] = "local",
        inventory: Annotated[
            Path | None,
            typer.Option(envvar="ORRERY_INVENTORY", help="declared nodes (YAML); default: NVML"),
        ] = None,
        kubeconfig: Annotated[
            Path | None,
            typer.Option(envvar="ORRERY_KUBECONFIG", help="kubeconfig; default: in-cluster"),
        ] = None,
        context: Annotated[
            str | None, typer.Option(envvar="ORRERY_CONTEXT", help="kubeconfig context")
        ] = None,
        namespace: Annotated[
            str, typer.Option(envvar="ORRERY_NAMESPACE", help="namespace for slice Jobs")
        ] = "orrery",
        state: Annotated[
            Path | None,
            typer.Option(envvar="ORRERY_STATE", help="folder for attempts, logs and the lease"),
        ] = None,
        address: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_ADDRESS", help="address slices are reached at (MASTER_ADDR)"
            ),
        ] = None,
        heartbeat_interval: Annotated[
            float,
            typer.Option(envvar="ORRERY_HEARTBEAT_INTERVAL", help="seconds between heartbeats"),
        ] = timing.HEARTBEAT_S,
        lease: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_LEASE", help="cut off from the hub this long, slices stop (s)"
            ),
        ] = timing.LEASE_S,
        kill_grace: Annotated[
            float, typer.Option(envvar="ORRERY_KILL_GRACE", help="SIGTERM to SIGKILL (s)")
        ] = timing.KILL_GRACE_S,
        join: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_JOIN", help="enroll with this hub (its API URL), once, with --token"
            ),
        ] = None,
        token: Annotated[
            str | None,
            typer.Option(envvar="ORRERY_JOIN_TOKEN", help="the one-time join token for --join"),
        ] = None,
        ca_hash: Annotated[
            str | None,
            typer.Option(
                "--ca-hash",
                envvar="ORRERY_CA_HASH",
                help="pin the hub CA at --join: sha256:<hex> (printed by `orrery cluster token create`)",
            ),
        ] = None,
        insecure: Annotated[
            bool,
            typer.Option(
                "--insecure",
                envvar="ORRERY_INSECURE",
                help="development only: plain NATS, no enrolled identity",
            ),
        ] = False,
        run_as: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_RUN_AS", help="local slices run as this user (the agent as root)"
            ),
        ] = None,
        allow_root_slices: Annotated[
            bool,
            typer.Option(
                "--allow-root-slices",
                envvar="ORRERY_ALLOW_ROOT_SLICES",
                help="let local slices run as root (refused by default)",
            ),
        ] = False,
        slice_tracking: Annotated[
            str,
            typer.Option(
                envvar="ORRERY_SLICE_TRACKING",
                help="auto, cgroup (v2, required) or pgroup (process groups + subreaper)",
            ),
        ] = "auto",
        slice_retention: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_SLICE_RETENTION",
                help="keep an ended local slice's folder this long after the hub recorded it (s)",
            ),
        ] = 86400.0,
        hub_key: Annotated[
            Path | None,
            typer.Option(
                "--hub-key",
                envvar="ORRERY_HUB_KEY",
                help="the hub's order-signing public key (PEM) to verify orders against; "
                "default: the one enrollment stored in --state",
            ),
        ] = None,
        data_cache: Annotated[
            Path | None,
            typer.Option(
                envvar="ORRERY_DATA_CACHE",
                help="where datasets are staged before the slices that read them start "
                "(default: STATE/datasets)",
            ),
        ] = None,
        data_cache_limit: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_DATA_CACHE_LIMIT",
                help="the cache's size limit, e.g. 500GiB: least recently used datasets "
                "no slice reads are evicted to stay under it (default: no limit)",
            ),
        ] = None,
        secrets_dir: Annotated[
            Path | None,
            typer.Option(
                envvar="ORRERY_SECRETS_DIR",
                help="local slices: a folder of secrets, one file per name "
                "({secretRef: NAME} in a job's env reads the file NAME)",
            ),
        ] = None,
    ) -> None:
        """Run a spoke agent for one cluster."""
        from orrery_spoke_agent.agent import Agent
        from orrery_spoke_agent.inventory import from_nvml, load_declared
        from orrery_spoke_agent.settings import SpokeSettings

        logs.setup()
        try:
            state_dir = state or Path(".orrery") / "spokes" / cluster
            labels = _labels(label or [])
            identity = None
            if not valid_cluster_name(cluster):
                raise InvalidInput(
                    f"--cluster: {cluster!r} must be 1-63 lowercase letters, digits or '-'"
                )
            if not insecure:
                identity, nats, labels = _identity(
                    state_dir,
                    cluster,
                    join,
                    token,
                    nats,
                    {**labels, **({"region": region} if region else {})},
                    ca_hash,
                )
                region = None
            elif nats is None:
                raise InvalidInput("--nats: required with --insecure")
            settings = SpokeSettings(
                nats_url=nats,
                cluster=cluster,
                region=region,
                labels=labels,
                executor=executor,
                inventory_file=inventory,
                address=address,
                state_dir=state_dir,
                heartbeat_interval_s=heartbeat_interval,
                lease_s=lease,
                kill_grace_s=kill_grace,
                insecure=insecure,
                run_as=run_as,
                allow_root_slices=allow_root_slices,
                slice_tracking=slice_tracking,
                slice_retention_s=slice_retention,
                hub_key_file=hub_key,
                secrets_dir=secrets_dir,
                data_cache_dir=data_cache,
                data_cache_limit_bytes=cache_limit(data_cache_limit),
            )
            settings.check()
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            if executor == "kubernetes":
                from orrery_spoke_agent.executor.kubernetes import build as build_k8s

                ex, nodes = build_k8s(
                    settings, kubeconfig=kubeconfig, context=context, namespace=namespace
                )
            else:
                from orrery_spoke_agent.executor.local import LocalExecutor
                from orrery_spoke_agent.executor.local_host import (
                    check_reachable,
                    resolve_slice_user,
                )

                user = resolve_slice_user(run_as, allow_root=allow_root_slices)

                if inventory is not None:
                    nodes = load_declared(inventory)
                else:
                    found = from_nvml()
                    if found is None:
                        raise InvalidInput(
                            "--inventory: no NVIDIA GPUs found through NVML; declare this "
                            "cluster's nodes in a file"
                        )
                    nodes = found
                ex = LocalExecutor(
                    settings.state_dir,
                    lease_s=lease,
                    kill_grace_s=kill_grace,
                    user=user,
                    tracking=slice_tracking,
                    retention_s=slice_retention,
                    secrets_dir=secrets_dir,
                )
                check_reachable(ex.work, user)
            asyncio.run(Agent(settings, ex, nodes, identity=identity).run())
        except OrreryError as exc:
            typer.echo(f"orrery spoke: {exc.message}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            pass
