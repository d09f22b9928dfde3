"""Logs are logfmt: values a peer or a workload chose are quoted, cannot split a line or
forge a field, and parse back; credentials never reach a line."""

from __future__ import annotations

import io
import logging

import pytest

from orrery import logs


def line_for(msg: str, **extra: object) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.LogfmtFormatter())
    log = logging.getLogger("orrery.test.logs")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    log.info(msg, extra=extra)
    return out.getvalue()


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "two words",
        'say "hi"',
        "line one\nline two\r\tend",
        "job=forged cluster=evil",
        "back\\slash",
        "",
        "ünïcode ✓",
        "bell\x07 and del\x7f",
    ],
)
def test_every_value_comes_back_as_written(value: str) -> None:
    line = line_for("slice ended", reason=value, job="j-1")
    assert line.count("\n") == 1 and line.endswith("\n")  # one event, one line
    fields = logs.parse(line.rstrip("\n"))
    assert fields["reason"] == value
    assert fields["job"] == "j-1"  # a value cannot forge another field
    assert fields["msg"] == "slice ended"
    assert fields["level"] == "info" and fields["logger"] == "orrery.test.logs"


def test_simple_values_stay_bare_so_grep_finds_them() -> None:
    line = line_for("slice started", job="llama-1f2e3d", slice=0, epoch=2, cluster="eu-1")
    assert " job=llama-1f2e3d slice=0 epoch=2 cluster=eu-1" in line
    assert 'msg="slice started"' in line
    assert 'reason="two words"' in line_for("x", reason="two words")


def test_credentials_are_redacted() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n"
    line = line_for(
        "enrolled", token="s3cr3t-tok", admin_token="adm1n", password="pw", detail=pem, path="/x"
    )
    for secret in ("s3cr3t-tok", "adm1n", 'pw"', "MC4CAQAwBQYDK2VwBCIEI"):
        assert secret not in line
    fields = logs.parse(line.rstrip("\n"))
    assert fields["token"] == fields["admin_token"] == fields["detail"] == logs.REDACTED
    assert fields["path"] == "/x"


def test_a_traceback_stays_on_the_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.LogfmtFormatter())
    log = logging.getLogger("orrery.test.exc")
    log.handlers[:] = [handler]
    log.propagate = False
    try:
        raise ValueError("boom\nsecond")
    except ValueError:
        log.exception("handler failed", extra={"cluster": "c"})
    text = out.getvalue()
    assert text.count("\n") == 1
    fields = logs.parse(text.rstrip("\n"))
    assert "ValueError: boom\nsecond" in fields["exc"] and fields["cluster"] == "c"
