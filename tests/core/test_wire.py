"""The wire protocol: round trips, refusals, and golden files that keep hub N and spoke N-1
speaking the same language. If a golden test fails, you changed the protocol: bump
PROTOCOL_VERSION or make the change backward compatible, then regenerate deliberately
(``ORRERY_REGEN_GOLDEN=1``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orrery.wire import (
    Assignment,
    CachedDataset,
    DataMount,
    DatasetState,
    Heartbeat,
    HeartbeatAck,
    Kill,
    NodeReport,
    Prefetch,
    Progress,
    SliceKey,
    SlicePhase,
    SliceReport,
    SliceStatus,
    Subjects,
    WireError,
    decode,
    decode_order,
    encode,
)
from orrery.wire.codec import MAX_MESSAGE_BYTES, decode_any

GOLDEN = Path(__file__).parent / "golden"

SAMPLES = {
    "heartbeat": Heartbeat(
        sender="spoke/eu-west",
        seq=7,
        cluster="eu-west",
        incarnation="abc123",
        address="10.0.0.5",
        labels={"region": "eu-west-1"},
        lease_s=10.0,
        nodes=[
            NodeReport(name="n0", gpu_type="H100", gpu_memory_mib=81920, gpus=8, free=[4, 5, 6, 7])
        ],
        slices=[
            SliceReport(
                job="train-1a2b3c",
                index=0,
                epoch=2,
                phase=SlicePhase.RUNNING,
                node="n0",
                gpus=[0, 1, 2, 3],
                started_at=1700000000.5,
                progress=Progress(
                    step=10,
                    total_steps=100,
                    metrics={"loss": 0.5},
                    checkpoint="/ckpt/9.pt",
                    checkpoint_step=9,
                ),
            )
        ],
    ),
    "heartbeat_ack": HeartbeatAck(
        sender="hub", seq=3, forget=[SliceKey(job="train-1a2b3c", index=1, epoch=1)]
    ),
    "slice_status": SliceStatus(
        sender="spoke/eu-west",
        seq=8,
        cluster="eu-west",
        incarnation="abc123",
        slice=SliceReport(
            job="train-1a2b3c",
            index=1,
            epoch=1,
            phase=SlicePhase.FAILED,
            exit_code=137,
            reason="killed by signal SIGKILL",
            finished_at=1700000100.0,
        ),
    ),
    # A launch that can never work (no such file): a workload failure, counted (issue 10).
    "slice_status_cause": SliceStatus(
        sender="spoke/eu-west",
        seq=9,
        cluster="eu-west",
        incarnation="abc123",
        slice=SliceReport(
            job="train-1a2b3c",
            index=0,
            epoch=3,
            phase=SlicePhase.FAILED,
            exit_code=127,
            reason="launch failed: cannot exec /no/such/trainer: No such file or directory",
            finished_at=1700000200.0,
            cause="workload",
        ),
    ),
    "assignment": Assignment(
        sender="hub",
        seq=11,
        job="train-1a2b3c",
        job_name="train",
        index=0,
        epoch=2,
        world_size=2,
        node="n0",
        gpus=[0, 1, 2, 3],
        master_addr="10.0.0.5",
        master_port=29500,
        command=["python", "train.py"],
        env={"EPOCHS": "3"},
        checkpoint_dir="/ckpt",
        checkpoint="/ckpt/9.pt",
        max_runtime_s=3600.0,
    ),
    # Issue 14: a cache report beside the slices, and an order naming data to stage.
    "heartbeat_datasets": Heartbeat(
        sender="spoke/eu-west",
        seq=10,
        cluster="eu-west",
        incarnation="abc123",
        lease_s=10.0,
        datasets=[
            CachedDataset(
                name="c4-en",
                version="2",
                state=DatasetState.STAGING,
                size_bytes=2_000_000,
                bytes_done=500_000,
                rate_bps=100_000.0,
                eta_s=15.0,
            ),
            CachedDataset(
                name="wiki",
                version="1",
                state=DatasetState.READY,
                size_bytes=1000,
                bytes_done=1000,
                in_use=2,
                last_used=1700000000.0,
            ),
        ],
    ),
    "assignment_datasets": Assignment(
        sender="hub",
        seq=13,
        job="train-1a2b3c",
        job_name="train",
        index=1,
        epoch=1,
        world_size=2,
        node="n0",
        master_addr="10.0.0.5",
        master_port=29500,
        command=["python", "train.py"],
        env={"ORRERY_DATA_SHARDS": "4:8"},
        checkpoint_dir="/ckpt",
        datasets=[
            DataMount(
                name="c4-en",
                version="2",
                uri="s3://corpora/c4/en",
                endpoint="http://10.0.0.9:8333",
                region="eu-west-1",
                size_bytes=2_000_000,
                mount_path="/data/c4",
            )
        ],
    ),
    "prefetch": Prefetch(
        sender="hub",
        seq=14,
        job="train-1a2b3c",
        datasets=[
            DataMount(
                name="c4-en",
                version="2",
                uri="s3://corpora/c4/en",
                region="eu-west-1",
                size_bytes=2_000_000,
                mount_path="/data/c4",
            )
        ],
    ),
    "kill": Kill(
        sender="hub",
        seq=12,
        job="train-1a2b3c",
        index=0,
        epoch=1,
        reason="not the current epoch",
        grace_s=2.0,
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_golden_files_decode_to_the_same_message(name: str) -> None:
    path = GOLDEN / f"{name}.json"
    msg = SAMPLES[name]
    if os.environ.get("ORRERY_REGEN_GOLDEN"):
        path.write_text(json.dumps(json.loads(encode(msg)), indent=2, sort_keys=True) + "\n")
    assert decode_any(path.read_bytes()) == msg
    assert json.loads(encode(msg)) == json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    msg = SAMPLES[name]
    assert decode(encode(msg), type(msg)) == msg


def test_messages_without_datasets_from_a_peer_one_version_behind_still_decode() -> None:
    hb = decode_any((GOLDEN / "heartbeat.json").read_bytes())
    assert isinstance(hb, Heartbeat) and hb.datasets is None
    a = decode_any((GOLDEN / "assignment.json").read_bytes())
    assert isinstance(a, Assignment) and a.datasets is None
    # ... and a message without data encodes as before (no empty field appears).
    assert "datasets" not in json.loads(encode(SAMPLES["heartbeat"]))
    bad = json.loads(encode(SAMPLES["heartbeat_datasets"]))
    bad["datasets"][0]["state"] = "Teleporting"
    with pytest.raises(WireError, match="state"):
        decode(json.dumps(bad).encode(), Heartbeat)


def test_a_report_without_cause_from_a_spoke_one_version_behind_still_decodes() -> None:
    old = decode_any((GOLDEN / "slice_status.json").read_bytes())
    assert isinstance(old, SliceStatus) and old.slice.cause is None
    bad = json.loads(encode(SAMPLES["slice_status_cause"]))
    bad["slice"]["cause"] = "cosmic rays"
    with pytest.raises(WireError, match="cause"):
        decode_any(json.dumps(bad).encode())


def test_orders_decode_by_kind() -> None:
    assert isinstance(decode_order(encode(SAMPLES["assignment"])), Assignment)
    assert isinstance(decode_order(encode(SAMPLES["kill"])), Kill)
    with pytest.raises(WireError):
        decode_order(encode(SAMPLES["heartbeat"]))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not json", "json"),
        (b'{"kind": "heartbeat"}', "sender"),
        (b'{"kind": "teleport", "v": 1, "sender": "x", "seq": 1}', "tag"),
        (json.dumps({**json.loads(encode(SAMPLES["kill"])), "extra": 1}).encode(), "extra"),
        (json.dumps({**json.loads(encode(SAMPLES["kill"])), "v": 2}).encode(), "protocol version"),
        (json.dumps({**json.loads(encode(SAMPLES["kill"])), "index": -1}).encode(), "index"),
    ],
)
def test_bad_messages_raise_wire_error_saying_why(data: bytes, words: str) -> None:
    with pytest.raises(WireError) as exc:
        decode_any(data)
    assert words.lower() in str(exc.value).lower()


def test_oversized_messages_are_refused_before_parsing() -> None:
    with pytest.raises(WireError, match="exceeds"):
        decode_any(b" " * (MAX_MESSAGE_BYTES + 1))


def test_subjects_are_scoped_per_cluster() -> None:
    s = Subjects("eu-west")
    assert s.heartbeat == "orrery.v1.cluster.eu-west.report.heartbeat"
    assert s.orders == "orrery.v1.cluster.eu-west.orders"
    assert Subjects.cluster_of(s.heartbeat) == "eu-west"
    assert Subjects.cluster_of(s.status) == "eu-west"
    assert Subjects.cluster_of(s.orders) is None  # orders are not reports
    assert Subjects.cluster_of("other.v1.cluster.x.report.heartbeat") is None
    with pytest.raises(ValueError, match="cluster name"):
        Subjects("EU.west")  # a dot would escape the subject hierarchy


def test_log_requests_and_chunks_round_trip_within_their_limits() -> None:
    from orrery.wire import LogChunk, LogRequest
    from orrery.wire.logs import MAX_CHUNK_BYTES, MAX_TAIL_LINES, MAX_WAIT_S

    assert Subjects("eu-west").logs == "orrery.v1.cluster.eu-west.logs"
    assert Subjects.cluster_of(Subjects("eu-west").logs) is None  # not a report
    req = LogRequest(
        sender="hub",
        seq=1,
        stream="0f" * 8,
        job="j",
        index=0,
        epoch=2,
        offset=10,
        tail_lines=5,
        follow=True,
        wait_s=5,
    )
    assert decode(encode(req), LogRequest) == req
    data = bytes(range(256)) * (MAX_CHUNK_BYTES // 256)
    chunk = LogChunk(sender="spoke/eu", seq=2, stream=req.stream, data=LogChunk.pack(data))
    back = decode(encode(chunk), LogChunk)
    assert back.raw == data and len(encode(back)) < 100 * 1024  # far under NATS' 1 MiB
    base = json.loads(encode(req))
    for field, bad in [
        ("max_bytes", MAX_CHUNK_BYTES + 1),
        ("tail_lines", MAX_TAIL_LINES + 1),
        ("wait_s", MAX_WAIT_S + 1),
        ("stream", "../x"),
        ("offset", -1),
        ("epoch", 2**70),
    ]:
        with pytest.raises(WireError, match=field):
            decode(json.dumps({**base, field: bad}).encode(), LogRequest)
    too_big = {**json.loads(encode(chunk)), "data": "A" * (len(chunk.data) + 8)}
    with pytest.raises(WireError, match="data"):
        decode(json.dumps(too_big).encode(), LogChunk)
