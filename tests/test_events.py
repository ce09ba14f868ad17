"""The event format of SPEC §1: what is accepted, what is refused and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dispatcher.events import MAX_PAYLOAD_BYTES, Event, InvalidEvent, parse_event, type_from_topic

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def parse(obj: object, topic_type: str | None = "AutoSSL/CertificateInstalled") -> Event:
    payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_event(payload, topic_type=topic_type, default_host="server1.example.com", now=NOW)


def test_a_full_event_keeps_every_field() -> None:
    """Every field given is kept as given."""
    event = parse(
        {
            "id": "7f1c9a2e",
            "type": "AutoSSL/CertificateInstalled",
            "occurred_at": "2026-11-23T10:00:00Z",
            "host": "web7.example.com",
            "account": "bob",
            "client_id": 12,
            "data": {"domain": "example.com"},
        }
    )
    assert (event.id, event.type, event.host, event.account, event.client_id) == (
        "7f1c9a2e",
        "AutoSSL/CertificateInstalled",
        "web7.example.com",
        "bob",
        12,
    )
    assert event.occurred_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert event.data == {"domain": "example.com"}
    assert (event.app, event.name) == ("AutoSSL", "CertificateInstalled")


def test_an_empty_object_takes_its_defaults_from_the_topic_and_the_config() -> None:
    """Type from the topic, a fresh id, receipt time, the configured hostname, empty data."""
    event = parse({})
    assert event.type == "AutoSSL/CertificateInstalled"
    assert len(event.id) == 36
    assert event.occurred_at == NOW
    assert event.host == "server1.example.com"
    assert event.data == {} and event.account is None and event.client_id is None


def test_offsets_in_occurred_at_are_understood() -> None:
    event = parse({"occurred_at": "2026-11-23T12:30:00+02:00"})
    assert event.occurred_at == datetime(2026, 11, 23, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "topic_type", "reason", "fragment"),
    [
        (b"{not json", "A/B", "invalid_json", "not valid JSON"),
        (b"\xff\xfe", "A/B", "invalid_json", "not UTF-8"),
        (b"[1, 2]", "A/B", "not_an_object", "array"),
        (b'"text"', "A/B", "not_an_object", "string"),
        (b'{"client_id": "12"}', "A/B", "bad_field", "client_id: expected an integer"),
        (b'{"client_id": true}', "A/B", "bad_field", "client_id: expected an integer"),
        (b'{"data": [1]}', "A/B", "bad_field", "data: expected an object"),
        (b'{"occurred_at": "yesterday"}', "A/B", "bad_field", "occurred_at"),
        (b'{"occurred_at": "2026-11-23"}', "A/B", "bad_field", "occurred_at"),
        (b'{"account": 5}', "A/B", "bad_field", "account: expected a string"),
        (b'{"type": "NoSlash"}', None, "bad_field", "App/Event"),
        (b'{"colour": "red"}', "A/B", "bad_field", "unknown field"),
        (b'{"type": "A/B"}', "A/C", "topic_mismatch", "disagrees"),
        (b"{}", None, "missing_type", "type is required"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "A/B", "too_large", "limit"),
    ],
)
def test_bad_messages_are_refused_with_their_reason(
    payload: bytes, topic_type: str | None, reason: str, fragment: str
) -> None:
    """Each bad case of SPEC §1 raises InvalidEvent with a reason code and a message naming the problem."""
    with pytest.raises(InvalidEvent) as caught:
        parse(payload, topic_type)
    assert caught.value.reason == reason
    assert fragment in str(caught.value)


def test_every_wrong_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse({"client_id": "x", "data": 3, "host": 1})
    assert len(caught.value.details) == 3


def test_stored_form_round_trips() -> None:
    event = parse({"id": "e1", "account": "bob", "data": {"ü": "ß"}})
    assert Event.from_json(event.to_json()) == event


def test_type_from_topic() -> None:
    assert type_from_topic("events/Backup/Failure", "events") == "Backup/Failure"
    assert type_from_topic("events", "events") is None
    assert type_from_topic("other/Backup/Failure", "events") is None
