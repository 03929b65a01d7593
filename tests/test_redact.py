"""Credentials never leave the process: odd URLs (a '/' or a space in the password, credentials in
the query string) are masked in log lines, messages and /healthz, and diagnosing such a URL does not
quote its password in an exception."""

from __future__ import annotations

import logging

import pytest

from pipeline.metrics import Metrics
from pipeline.redact import RedactingFilter, mask_url
from pipeline.sources.rtsp import diagnose

PASSWORD = "hunter2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.5/cam", "rtsp://***:***@10.0.0.5/cam"),
        ("rtsp://admin@10.0.0.5/cam", "rtsp://***@10.0.0.5/cam"),
        ("rtsp://10.0.0.5:554/cam", "rtsp://10.0.0.5:554/cam"),  # nothing to mask
        # FFmpeg takes the last '@' before the path: an '@' inside the password is still masked whole
        ("rtsp://admin:hun@ter2@10.0.0.5/cam", "rtsp://***:***@10.0.0.5/cam"),
        # a '/' in the password (should have been %2F): everything before the last '@' is masked
        ("cannot open rtsp://admin:hunter2/x@host/cam: refused", "cannot open rtsp://***:***@host/cam: refused"),
        # a space in the password (an invalid URL, still quoted back in errors)
        ("expected a URL, got 'rtsp://admin:hunter 2@host/cam'", "expected a URL, got 'rtsp://***:***@host/cam'"),
        # credentials in the query string, as some cameras take them
        ("rtsp://10.0.0.5/cam?user=admin&password=hunter2&channel=1",
         "rtsp://10.0.0.5/cam?user=***&password=***&channel=1"),
        ("http://cam/snap.cgi?usr=admin&pwd=hunter2", "http://cam/snap.cgi?usr=***&pwd=***"),
        ("rtsp://cam/live?token=hunter2", "rtsp://cam/live?token=***"),
        ("rtsp://cam/live?Password=hunter2", "rtsp://cam/live?Password=***"),
    ],
)
def test_mask_url_masks_every_form_of_credentials(text, expected):
    assert mask_url(text) == expected


def test_plain_text_is_left_alone():
    text = "camera dock: streaming -> stalled (no frame for 3.0 s); mail ops@example.com"
    assert mask_url(text) == text


def test_log_records_with_query_credentials_are_masked():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "cannot open %s", ("rtsp://h/s?user=admin&password=hunter2",),
                               None)
    RedactingFilter().filter(record)
    assert PASSWORD not in record.getMessage() and "admin" not in record.getMessage()


def test_healthz_reason_with_query_credentials_is_masked():
    cam = Metrics().camera("dock")
    from pipeline.metrics import CameraState

    cam.set_state(CameraState.RECONNECTING, "cannot open rtsp://h/s?user=admin&password=hunter2: refused")
    assert PASSWORD not in cam.state_reason and "password=***" in cam.state_reason


def test_diagnosing_a_url_with_a_slash_in_the_password_does_not_quote_it():
    # urlsplit takes `hunter2` for the port: `.port` raises "Port could not be cast ... 'hunter2'",
    # which the live capture turned into a camera state reason (/healthz) and a log line.
    why = diagnose("rtsp://admin:hunter2/x@127.0.0.1/cam", timeout_s=0.5)
    assert PASSWORD not in why
    assert "port" in why


def test_diagnosing_a_port_out_of_range_says_so():
    why = diagnose("rtsp://admin:999999/x@127.0.0.1/cam", timeout_s=0.5)  # an all-digit password
    assert "999999" not in why and "out of range" in why
