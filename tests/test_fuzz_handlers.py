"""Fuzz the two message handlers that face the network: the hub's report handler and the
agent's order handler. Random bytes, random JSON and well-formed messages with absurd
values (hypothesis, every message kind) go in; neither ever raises, neither logs an
unexpected error (each handler's catch-all), and both keep serving afterwards.

Each side runs on its own event loop in a thread, because hypothesis drives a synchronous
test; the handler runs there as it would on a message from NATS."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orrery.natsserver import NatsServer
from orrery.wire import SliceKey, Subjects
from orrery_hub.config.settings import HubSettings
from orrery_hub.main import Hub
from orrery_spoke_agent.agent import Agent
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.settings import SpokeSettings
from tests.conftest import ADMIN_TOKEN, FAST
from tests.core.test_wire_fuzz import KINDS, _sample, json_values

T = TypeVar("T")
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Errors(logging.Handler):
    """ERROR records with a traceback: what a handler's catch-all logs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture
def errors() -> Iterator[Errors]:
    h = Errors()
    logging.getLogger("orrery").addHandler(h)
    yield h
    logging.getLogger("orrery").removeHandler(h)


class _Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data = subject, data
        self.responses: list[bytes] = []

    async def respond(self, data: bytes) -> None:
        self.responses.append(data)


def payloads() -> st.SearchStrategy[bytes]:
    def absurd(kind: str, field: str, value: Any) -> bytes:
        msg = _sample(kind)
        if field in msg:
            msg[field] = value
        try:
            return json.dumps(msg).encode()
        except ValueError:
            return b"{}"

    well_formed = st.builds(
        absurd,
        st.sampled_from(sorted(KINDS)),
        st.sampled_from(
            [
                "seq",
                "epoch",
                "index",
                "slices",
                "nodes",
                "labels",
                "lease_s",
                "gpus",
                "command",
                "env",
                "reason",
                "grace_s",
                "forget",
                "slice",
                "cluster",
                "max_runtime_s",
            ]
        ),
        json_values,
    )
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        well_formed,
    )


@pytest.fixture(scope="module")
def hub_loop(
    tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer
) -> Iterator[tuple[LoopThread, Hub]]:
    lt = LoopThread()
    hub = lt.run(_make_hub(tmp_path_factory.mktemp("fuzz-reports"), nats_server.url))
    ready = asyncio.run_coroutine_threadsafe(hub.run(), lt.loop)
    lt.run(_until(lambda: hub.healthy))
    yield lt, hub
    lt.loop.call_soon_threadsafe(hub.stop)
    ready.result(20)
    lt.close()


async def _make_hub(state: Path, nats_url: str) -> Hub:
    return Hub(
        HubSettings(
            state_dir=state,
            nats_url=nats_url,
            port=0,
            timing=FAST,
            insecure=True,
            admin_token=ADMIN_TOKEN,
        )
    )


async def _until(pred: Any, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@FUZZ
@given(data=payloads(), subject_cluster=st.sampled_from(["c", "other", "x" * 60]))
def test_the_hub_report_handler_never_fails(
    hub_loop: tuple[LoopThread, Hub], errors: Errors, data: bytes, subject_cluster: str
) -> None:
    lt, hub = hub_loop
    subject = f"orrery.v1.cluster.{subject_cluster}.report.heartbeat"
    lt.run(hub._on_report(_Msg(subject, data)))  # type: ignore[arg-type]
    assert errors.records == [], errors.records[0].getMessage()
    assert hub.healthy


@pytest.fixture(scope="module")
def agent_loop(
    tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer
) -> Iterator[tuple[LoopThread, Agent]]:
    lt = LoopThread()
    s = SpokeSettings(
        nats_url=nats_server.url,
        cluster="fuzzed",
        state_dir=tmp_path_factory.mktemp("spoke"),
        heartbeat_interval_s=0.2,
        # The fuzzed hub shares this NATS server and hears these heartbeats: a lease it
        # accepts, so that it does not log a refusal five times a second, into the
        # capture of whatever test runs then (or a closed one, after the module).
        lease_s=FAST.lease_s,
        insecure=True,
    )
    agent = lt.run(_make_agent(s))
    running = asyncio.run_coroutine_threadsafe(agent.run(), lt.loop)
    yield lt, agent
    lt.loop.call_soon_threadsafe(agent.shutdown)
    running.result(20)
    lt.close()


async def _make_agent(s: SpokeSettings) -> Agent:
    return Agent(s, FakeExecutor(), [Node("n0", "H100", 8, 81920)])


@FUZZ
@given(data=payloads())
def test_the_agent_order_handler_never_fails(
    agent_loop: tuple[LoopThread, Agent], errors: Errors, data: bytes
) -> None:
    lt, agent = agent_loop
    lt.run(agent._on_order(_Msg(Subjects("fuzzed").orders, data)))  # type: ignore[arg-type]
    assert errors.records == [], errors.records[0].getMessage()
    # Whatever it took, its next heartbeat still encodes and goes out.
    hb = agent.heartbeat()
    assert hb.cluster == "fuzzed"


def test_after_the_fuzz_both_still_serve(
    hub_loop: tuple[LoopThread, Hub], agent_loop: tuple[LoopThread, Agent]
) -> None:
    """Run after (or without) the fuzz: a valid heartbeat is acked, a valid order is run."""
    lt, hub = hub_loop
    hb = _sample("heartbeat") | {"cluster": "sane", "sender": "spoke/sane"}
    msg = _Msg("orrery.v1.cluster.sane.report.heartbeat", json.dumps(hb).encode())
    lt.run(hub._on_report(msg))  # type: ignore[arg-type]
    lt.run(_until(lambda: bool(msg.responses)))
    alt, agent = agent_loop
    order = _sample("assignment") | {"job": "sane", "node": "n0", "gpus": [7]}
    alt.run(agent._on_order(_Msg(Subjects("fuzzed").orders, json.dumps(order).encode())))  # type: ignore[arg-type]
    assert SliceKey(job="sane", index=0, epoch=0) in agent.attempts
