"""``orrery hub``: the hub alone. Registered into the ``orrery`` CLI through the
``orrery.commands`` entry point, so the core CLI never imports the hub."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from orrery import eventloop, logs, timing
from orrery.errors import OrreryError
from orrery_hub.auth.oidc import OidcSettings
from orrery_hub.config.settings import HubSettings, Timing


def _duration(flag: str, text: str) -> float:
    from orrery.duration import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        typer.echo(f"orrery hub: {flag}: {exc}", err=True)
        raise typer.Exit(2) from None


def command(app: typer.Typer) -> None:
    @app.command("hub")
    def hub(
        port: Annotated[
            int, typer.Option(envvar="ORRERY_PORT", help="API port (0: any free)")
        ] = 8080,
        host: Annotated[str, typer.Option(envvar="ORRERY_HOST", help="API address")] = "127.0.0.1",
        db: Annotated[
            str | None,
            typer.Option(envvar="ORRERY_DB", help="SQLAlchemy URL; default SQLite in --state"),
        ] = None,
        nats: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_NATS", help="NATS URL; default: start an embedded nats-server"
            ),
        ] = None,
        policies: Annotated[
            Path | None, typer.Option(envvar="ORRERY_POLICIES", help="folder of policy files")
        ] = None,
        state: Annotated[
            Path,
            typer.Option(
                envvar="ORRERY_STATE", help="folder for the database, checkpoints and logs"
            ),
        ] = Path(".orrery/hub"),
        heartbeat_interval: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_HEARTBEAT_INTERVAL", help="expected spoke heartbeat interval, s"
            ),
        ] = timing.HEARTBEAT_S,
        lease: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_LEASE",
                help="spoke lease, s: a spoke cut off this long stops its slices",
            ),
        ] = timing.LEASE_S,
        failover_timeout: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_FAILOVER_TIMEOUT", help="a cluster silent this long is Lost, s"
            ),
        ] = timing.FAILOVER_S,
        kill_grace: Annotated[
            float, typer.Option(envvar="ORRERY_KILL_GRACE", help="SIGTERM to SIGKILL, s")
        ] = timing.KILL_GRACE_S,
        max_clock_drift: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_MAX_CLOCK_DRIFT",
                help="how late, over one lease, a spoke's view of time may be against the "
                "hub's, s (part of the fencing rule)",
            ),
        ] = timing.MAX_CLOCK_DRIFT_S,
        reconcile_interval: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_RECONCILE_INTERVAL",
                help="how often the hub looks for silent clusters and schedules, s",
            ),
        ] = 0.5,
        assign_timeout: Annotated[
            float | None,
            typer.Option(
                envvar="ORRERY_ASSIGN_TIMEOUT",
                help="an assignment its spoke has not confirmed this long is fenced and placed "
                "again, s (default: 3 heartbeat intervals + the lease)",
            ),
        ] = None,
        backoff: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_BACKOFF", help="first retry backoff, s (doubles per failure)"
            ),
        ] = 1.0,
        queues: Annotated[Path | None, typer.Option(envvar="ORRERY_QUEUES", help="queue weights, quotas and cohorts (YAML)")] = None,
        fair_share: Annotated[bool, typer.Option(envvar="ORRERY_FAIR_SHARE", help="order queues by weighted GPU share")] = True,
        preemption: Annotated[bool, typer.Option(envvar="ORRERY_PREEMPTION", help="let higher-priority or under-share jobs preempt")] = True,
        backfill: Annotated[bool, typer.Option(envvar="ORRERY_BACKFILL", help="run short jobs on GPUs reserved for a waiting gang")] = True,
        shortest_first: Annotated[bool, typer.Option(envvar="ORRERY_SHORTEST_FIRST", help="within a queue, least expected GPU-seconds first: maxRuntime, else the median runtime of the queue/team's recent finished jobs")] = True,
        preemption_min_run: Annotated[float, typer.Option(envvar="ORRERY_PREEMPTION_MIN_RUN", help="a job placed less than this long ago is never preempted, s")] = 60.0,
        preemption_grace: Annotated[float, typer.Option(envvar="ORRERY_PREEMPTION_GRACE", help="a preempted slice's time to checkpoint before SIGKILL, s")] = 30.0,
        insecure: Annotated[bool, typer.Option("--insecure", envvar="ORRERY_INSECURE", help="development only: plain NATS, unenrolled clusters accepted")] = False,
        ca_cert: Annotated[Path | None, typer.Option(envvar="ORRERY_CA_CERT", help="a CA certificate the platform team already has (PEM); with --ca-key")] = None,
        ca_key: Annotated[Path | None, typer.Option(envvar="ORRERY_CA_KEY", help="that CA's private key (EC P-256, PEM)")] = None,
        nats_ca: Annotated[Path | None, typer.Option(envvar="ORRERY_NATS_CA", help="with --nats: the CA of that server's certificate")] = None,
        nats_cert: Annotated[Path | None, typer.Option(envvar="ORRERY_NATS_CERT", help="with --nats: the hub's client certificate there")] = None,
        nats_key: Annotated[Path | None, typer.Option(envvar="ORRERY_NATS_KEY", help="with --nats: its private key")] = None,
        manage_nats: Annotated[bool, typer.Option("--manage-nats", envvar="ORRERY_MANAGE_NATS", help="with --nats: that server runs from <state>/identity/nats.conf; keep its users in step and reload it")] = False,
        require_approval: Annotated[bool, typer.Option("--require-approval", envvar="ORRERY_REQUIRE_APPROVAL", help="an enrolled cluster waits for `orrery cluster approve NAME`")] = False,
        cert_ttl: Annotated[str, typer.Option(envvar="ORRERY_CERT_TTL", help="validity of cluster certificates (renewed at 20% left)")] = "30d",
        tls_cert: Annotated[Path | None, typer.Option(envvar="ORRERY_TLS_CERT", help="serve the API over HTTPS with this certificate (PEM); with --tls-key")] = None,
        tls_key: Annotated[Path | None, typer.Option(envvar="ORRERY_TLS_KEY", help="the API certificate's private key (PEM)")] = None,
        admin_token_file: Annotated[
            Path | None,
            typer.Option(
                envvar="ORRERY_ADMIN_TOKEN_FILE",
                help="a file holding an admin API token (default: made at first start, "
                "written to <state>/admin.token)",
            ),
        ] = None,
        metrics_open: Annotated[
            bool,
            typer.Option(
                "--metrics-open",
                envvar="ORRERY_METRICS_OPEN",
                help="serve /metrics without a token",
            ),
        ] = False,
        write_rate: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_WRITE_RATE",
                help="writes per second per API token (token bucket; 0: no limit)",
            ),
        ] = 20.0,
        write_burst: Annotated[
            int, typer.Option(envvar="ORRERY_WRITE_BURST", help="writes a token may burst")
        ] = 100,
        oidc_issuer: Annotated[
            str | None,
            typer.Option(envvar="ORRERY_OIDC_ISSUER", help="accept JWTs from this OIDC issuer"),
        ] = None,
        oidc_audience: Annotated[
            str | None,
            typer.Option(envvar="ORRERY_OIDC_AUDIENCE", help="the audience they must name"),
        ] = None,
        oidc_jwks: Annotated[
            str | None,
            typer.Option(envvar="ORRERY_OIDC_JWKS", help="the issuer's JWKS: a file or a URL"),
        ] = None,
        oidc_groups: Annotated[
            Path | None,
            typer.Option(
                envvar="ORRERY_OIDC_GROUPS", help="YAML mapping OIDC groups to role and team"
            ),
        ] = None,
        retention_days: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_RETENTION_DAYS",
                help="prune events and audit rows of jobs finished this many days ago "
                "(0: keep forever)",
            ),
        ] = 30.0,
        leader_lease: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_LEADER_LEASE",
                help="run as one of several hubs on one database: the leader holds a lease "
                "this long, s; the others stand by (0: a lone hub)",
            ),
        ] = 0.0,
        advertise_url: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_ADVERTISE_URL",
                help="with --leader-lease: this hub's API URL as clients reach it (standbys "
                "name the leader's in their redirects)",
            ),
        ] = None,
        ready_file: Annotated[
            Path | None,
            typer.Option(
                envvar="ORRERY_READY_FILE", help="write the API and NATS URLs here once serving"
            ),
        ] = None,
    ) -> None:
        """Run the hub: REST API, store, scheduler and reconcile loop."""
        from orrery_hub.config.queues import load_queues
        from orrery_hub.main import Hub
        from orrery_hub.scheduler import Policy

        logs.setup()
        try:
            queue_config = load_queues(queues) if queues is not None else ()
        except OrreryError as exc:
            typer.echo(f"orrery hub: {exc.message}", err=True)
            raise typer.Exit(2) from None
        admin_token: str | None = None
        if admin_token_file is not None:
            try:
                admin_token = admin_token_file.read_text().strip()
            except OSError as exc:
                typer.echo(f"orrery hub: --admin-token-file: {exc.strerror}", err=True)
                raise typer.Exit(2) from None
            if not admin_token:
                typer.echo("orrery hub: --admin-token-file: the file is empty", err=True)
                raise typer.Exit(2)
        oidc_flags = (oidc_issuer, oidc_audience, oidc_jwks, oidc_groups)
        oidc: OidcSettings | None = None
        if any(f is not None for f in oidc_flags):
            if any(f is None for f in oidc_flags):
                typer.echo(
                    "orrery hub: --oidc-issuer, --oidc-audience, --oidc-jwks and --oidc-groups "
                    "go together",
                    err=True,
                )
                raise typer.Exit(2)
            assert oidc_issuer and oidc_audience and oidc_jwks and oidc_groups
            oidc = OidcSettings(oidc_issuer, oidc_audience, oidc_jwks, oidc_groups)
        # The simulator's "orrery" policy, stage by stage (Policy.full()).
        scheduling = Policy(fair_share=fair_share, quotas=True, preemption=preemption,
                            backfill=backfill, type_aware=True, grace_s=preemption_grace,
                            min_run_s=preemption_min_run, shortest_first=shortest_first,
                            preempt_for_gain=True)
        settings = HubSettings(
            state_dir=state,
            db_url=db,
            nats_url=nats,
            host=host,
            port=port,
            policies_dir=policies,
            timing=Timing(
                heartbeat_interval_s=heartbeat_interval,
                lease_s=lease,
                failover_timeout_s=failover_timeout,
                kill_grace_s=kill_grace,
                max_clock_drift_s=max_clock_drift,
                assign_timeout_s=assign_timeout,
                # A heartbeat's reply may wait this long for its report to be processed;
                # a short lease (orrery up --timing aggressive) needs a shorter wait.
                ack_wait_s=min(0.25, lease / 4),
            ),
            reconcile_interval_s=reconcile_interval,
            backoff_base_s=backoff,
            backoff_max_s=max(60.0, backoff),
            scheduling=scheduling,
            queues=queue_config,
            insecure=insecure,
            ca_cert=ca_cert,
            ca_key=ca_key,
            nats_ca=nats_ca,
            nats_cert=nats_cert,
            nats_key=nats_key,
            manage_nats=manage_nats,
            require_approval=require_approval,
            cert_ttl_s=_duration("--cert-ttl", cert_ttl),
            tls_cert=tls_cert,
            tls_key=tls_key,
            admin_token=admin_token,
            metrics_open=metrics_open,
            write_rate_per_s=write_rate,
            write_burst=write_burst,
            oidc=oidc,
            retention_days=retention_days,
            leader_lease_s=leader_lease,
            advertise_url=advertise_url,
        )

        def on_ready(e: object) -> None:
            from orrery_hub.main import Endpoints

            assert isinstance(e, Endpoints)
            typer.echo(f"orrery hub: API {e.api_url}  NATS {e.nats_url}", err=True)
            if ready_file:
                tmp = ready_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"api": e.api_url, "nats": e.nats_url}))
                tmp.replace(ready_file)

        async def main() -> None:
            import signal

            from orrery_hub.runtime import collector

            hub = Hub(settings)
            collector.tune()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, hub.stop)
            loop.add_signal_handler(signal.SIGHUP, hub.request_reload)
            await hub.run(on_ready=on_ready)

        try:
            eventloop.run(main())
        except OrreryError as exc:
            typer.echo(f"orrery hub: {exc.message}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            pass
