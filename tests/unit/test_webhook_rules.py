"""Webhook rules: which addresses are refused, the retry schedule, event type checks."""

from __future__ import annotations

import pytest

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.webhook_events import (
    EVENT_TYPES,
    check_event_types,
    check_url_shape,
    refused_address,
    retry_delay,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.9",
        "172.16.0.1",
        "169.254.169.254",
        "::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "fd00::1",
    ],
)
def test_loopback_private_and_link_local_are_refused(address: str) -> None:
    assert refused_address(address)


def test_public_addresses_are_allowed() -> None:
    assert refused_address("8.8.8.8") is None
    assert refused_address("2001:4860:4860::8888") is None


def test_url_shape() -> None:
    assert check_url_shape("https://example.com/x") == ("example.com", 443)
    assert check_url_shape("http://example.com:8080/x") == ("example.com", 8080)
    for bad in ("ftp://example.com", "example.com", "http://", "http://h:99999/", 3):
        with pytest.raises(InvalidParameter):
            check_url_shape(bad)


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 2, 30) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_event_types() -> None:
    assert check_event_types(None) == list(EVENT_TYPES)
    assert check_event_types(["fine_tune.failed", "fine_tune.failed"]) == ["fine_tune.failed"]
    with pytest.raises(InvalidParameter, match="nope"):
        check_event_types(["nope"])
