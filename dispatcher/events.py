"""The event: what a service publishes, and the one validation shared by the MQTT and HTTP intakes.

Format (SPEC §1): one JSON object, UTF-8, at most 256 KiB, with optional `id`, `type`, `occurred_at`,
`host`, `account`, `client_id` and `data`. A bad message raises `InvalidEvent` with a machine-readable
`reason` (used as a metrics label and in the dead-letter message) and a human-readable message; no input
raises anything else.

Beyond JSON's own rules, what could not be stored or sent later is refused here (never cleaned, so what is
stored is what was sent): the decoder's limits (`untrusted_json`: no lone surrogates, finite numbers, integers
of at most 100 digits, nesting at most 32 deep); control characters in `id`, `host` and `account`; names
longer than 255 characters; a `client_id` outside 1 … 2⁶³-1 (SQLite's integer); an `occurred_at` that does
not fit a date once converted to UTC (`9999-12-31T23:59:59-01:00`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import untrusted_json
from .errors import DispatcherError
from .untrusted_json import quote

MAX_PAYLOAD_BYTES = 256 * 1024
# The longest `host` or `account` (a DNS name is at most 253; a cPanel user name far less).
MAX_NAME_CHARS = 255
# SQLite's INTEGER is a signed 64-bit number.
MAX_CLIENT_ID = 2**63 - 1
# C0 controls and DEL: never part of an id, a host or an account name; a NUL or a line break in one would reach
# headers, file names and log lines.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# `App/Event`: two path segments of letters, digits, `_`, `-` and `.` (cPanel's template paths).
_TYPE_RE = re.compile(r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")
_KNOWN_FIELDS = frozenset({"id", "type", "occurred_at", "host", "account", "client_id", "data"})

REASONS = ("too_large", "invalid_json", "not_an_object", "bad_field", "missing_type", "topic_mismatch", "unreadable")
# `unreadable`: the intake could not read or store the message for a reason none of the checks here names (a fault
# of ours); it is dead-lettered like any bad message, so that one message never stops the intake.


class InvalidEvent(DispatcherError):
    """A message that is not an acceptable event. `reason` is one of `REASONS`."""

    def __init__(self, reason: str, message: str, details: list[str] | None = None) -> None:
        self.reason = reason
        self.details = details or [message]
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Event:
    """An accepted event, as stored and as templates see it."""

    id: str
    type: str
    occurred_at: datetime
    host: str
    account: str | None
    client_id: int | None
    data: Mapping[str, Any] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def app(self) -> str:
        return self.type.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.type.split("/", 1)[1]

    def to_json(self) -> str:
        """The stored form: the event object of SPEC §1, complete, plus `received_at`."""
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "occurred_at": _format_time(self.occurred_at),
                "host": self.host,
                "account": self.account,
                "client_id": self.client_id,
                "data": self.data,
                "received_at": _format_time(self.received_at),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Read back what `to_json` wrote."""
        obj = json.loads(text)
        return cls(
            id=obj["id"],
            type=obj["type"],
            occurred_at=datetime.fromisoformat(obj["occurred_at"]),
            host=obj["host"],
            account=obj["account"],
            client_id=obj["client_id"],
            data=obj["data"],
            received_at=datetime.fromisoformat(obj["received_at"]),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # An event is pickled for every attempt a sender process makes (dispatcher/senders/). A datetime with a tzinfo
        # pickles about 20 times slower than its ISO text, which round-trips exactly (offset included).
        return (
            _event_from_pickle,
            (
                self.id,
                self.type,
                self.occurred_at.isoformat(),
                self.host,
                self.account,
                self.client_id,
                self.data,
                self.received_at.isoformat(),
            ),
        )

    def template_view(self) -> dict[str, Any]:
        """The `event` variable of the templates (SPEC §5)."""
        return {
            "id": self.id,
            "type": self.type,
            "app": self.app,
            "name": self.name,
            "occurred_at": self.occurred_at,
            "host": self.host,
            "account": self.account,
            "client_id": self.client_id,
            "data": self.data,
        }


def _event_from_pickle(
    id: str,
    type: str,
    occurred_at: str,
    host: str,
    account: str | None,
    client_id: int | None,
    data: Any,
    received_at: str,
) -> Event:
    return Event(
        id,
        type,
        datetime.fromisoformat(occurred_at),
        host,
        account,
        client_id,
        data,
        datetime.fromisoformat(received_at),
    )


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (`2026-11-23T10:00:00Z`, offsets allowed); raise ValueError otherwise."""
    # RFC 3339 requires a date, a `T` (or space), a time and an offset; fromisoformat alone accepts far more.
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", text):
        raise ValueError("not an RFC 3339 timestamp")
    moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    try:
        moment.astimezone(UTC)  # stored in UTC: a time that does not fit once converted is refused here
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None
    return moment


def type_from_topic(topic: str, prefix: str) -> str | None:
    """`events/AutoSSL/CertificateInstalled` → `AutoSSL/CertificateInstalled`; None when the topic has no type."""
    rest = topic[len(prefix) + 1 :] if topic.startswith(prefix + "/") else ""
    return rest or None


def parse_event(
    payload: bytes | Mapping[str, Any],
    *,
    topic_type: str | None,
    default_host: str,
    now: datetime | None = None,
) -> Event:
    """Validate one message and build its `Event`, or raise `InvalidEvent` saying everything that is wrong.

    `payload` is the raw bytes from the bus or the already-decoded JSON body of an HTTP request.
    `topic_type` is the type the MQTT topic names (None over HTTP, where `type` is then required).
    """
    if isinstance(payload, bytes | bytearray):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidEvent("too_large", f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
        try:
            obj = untrusted_json.decode(payload, what="payload")
        except untrusted_json.UntrustedJsonError as err:
            raise InvalidEvent("invalid_json", str(err)) from None
    else:
        obj = payload
        fault = untrusted_json.find_fault(obj)
        if fault:
            raise InvalidEvent("invalid_json", f"payload {fault}")
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", f"payload is a JSON {_json_kind(obj)}, not an object")

    problems: list[str] = []

    def field_of(name: str, kinds: tuple[type, ...], kind_name: str) -> Any:
        value = obj.get(name)
        if value is None:
            return None
        # bool is an int in Python; JSON true is never a valid client_id.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            problems.append(f"{name}: expected {kind_name}, got {_json_kind(value)}")
            return None
        return value

    unknown = sorted(set(obj) - _KNOWN_FIELDS)
    if unknown:
        names = ", ".join(quote(name) for name in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        problems.append(f"unknown field(s): {names} (custom values belong in data)")

    def name_of(name: str, max_chars: int) -> str | None:
        value: str | None = field_of(name, (str,), "a string")
        if value is None:
            return None
        if len(value) > max_chars:
            problems.append(f"{name}: {quote(value)} is longer than {max_chars} characters")
        elif _CONTROL_RE.search(value):
            problems.append(f"{name}: {quote(value)} contains a control character")
        else:
            return value
        return None

    event_id = name_of("id", 200)
    if event_id == "":
        problems.append("id: must be 1 to 200 characters")
    body_type = field_of("type", (str,), "a string")
    if body_type is not None and not _TYPE_RE.match(body_type):
        problems.append(f"type: {quote(body_type)} is not of the form App/Event")
    occurred_raw = field_of("occurred_at", (str,), "an RFC 3339 string")
    occurred_at = None
    if occurred_raw is not None:
        try:
            occurred_at = parse_time(occurred_raw)
        except ValueError as err:
            problems.append(f"occurred_at: {quote(occurred_raw)} is not an RFC 3339 timestamp ({err})")
    host = name_of("host", MAX_NAME_CHARS)
    account = name_of("account", MAX_NAME_CHARS)
    client_id = field_of("client_id", (int,), "an integer")
    if client_id is not None and not 1 <= client_id <= MAX_CLIENT_ID:
        problems.append(f"client_id: {quote(client_id)} is not from 1 to {MAX_CLIENT_ID}")
        client_id = None
    data = field_of("data", (dict,), "an object")
    if problems:
        raise InvalidEvent("bad_field", "; ".join(problems), problems)

    if topic_type is not None and not _TYPE_RE.match(topic_type):
        raise InvalidEvent("topic_mismatch", f"topic type {quote(topic_type)} is not of the form App/Event")
    if body_type and topic_type and body_type != topic_type:
        raise InvalidEvent("topic_mismatch", f"type {quote(body_type)} disagrees with the topic's {quote(topic_type)}")
    event_type = body_type or topic_type
    if not event_type:
        raise InvalidEvent("missing_type", "type is required (in the body, or as <prefix>/<App>/<Event> in the topic)")

    received_at = now or datetime.now(UTC)
    return Event(
        id=event_id or str(uuid.uuid4()),
        type=event_type,
        occurred_at=occurred_at or received_at,
        host=host or default_host,
        account=account or None,
        client_id=client_id,
        data=data or {},
        received_at=received_at,
    )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
