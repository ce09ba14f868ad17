"""Account contact info (cPanel Contact Information) in the store, and the notices a change raises.

`update_contact_info` is the one way to change an account's settings, whichever front end is used: it validates,
writes in one store job (a refusal writes nothing), and then raises `ContactInfo/Change` to the account when
seeds/README says so:

- a guard (`*_notification_disabled`) that was on before the change sees its preference switched from on to off,
  or is itself switched off: the account hears it will no longer receive those notices;
- `notify_contact_address_change` was on and `email` or `second_email` changed: the notice goes to the new
  addresses and also to the old ones, which are recorded with the event (`account_contact_notices`) so the
  account source can add them as targets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from ..engines import Connection
from ..events import Event
from .model import (
    ACCOUNT_FIELDS,
    GUARDS,
    PREFERENCE_DEFAULTS,
    AccountContactInfo,
    InvalidInput,
    account_name_problem,
    validate_account_updates,
)

if TYPE_CHECKING:
    from ..app import Dispatcher
    from ..store import Store

log = structlog.get_logger(__name__)

CHANGE_EVENT_TYPE = "ContactInfo/Change"

# How the notice names a field it mentions: the parameter's documented description for the three strings,
# the `descp` shown in cPanel for the preferences.
_FIELD_DESCRIPTIONS: Mapping[str, str] = {
    **{spec.name: spec.descp for spec in ACCOUNT_FIELDS},
    "email": "The primary contact email address.",
    "second_email": "A secondary contact email address.",
    "pushbullet_access_token": "An access token for Pushbullet notifications.",
}


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """What a saved change must tell the account: the `ContactInfo/Change` event's data and its extra addresses."""

    event_id: str
    data: Mapping[str, Any]
    extra_addresses: tuple[str, ...]


# -- store functions (run in the store's thread) -----------------------------------------------------------------


def read_contact_info(conn: Connection, account: str) -> AccountContactInfo:
    """The account's settings; an account never saved has the documented defaults and no addresses."""
    row = conn.execute(
        "SELECT email, second_email, pushbullet_access_token, preferences FROM account_contacts WHERE account = ?",
        (account,),
    ).fetchone()
    if row is None:
        return AccountContactInfo(account=account)
    stored = json.loads(row[3])
    preferences = {name: bool(stored.get(name, default)) for name, default in PREFERENCE_DEFAULTS.items()}
    return AccountContactInfo(
        account=account, email=row[0], second_email=row[1], pushbullet_access_token=row[2], preferences=preferences
    )


def _write_contact_info(conn: Connection, info: AccountContactInfo, now: str) -> None:
    preferences = json.dumps({name: int(value) for name, value in info.preferences.items()}, sort_keys=True)
    conn.execute(
        """
        INSERT INTO account_contacts (account, email, second_email, pushbullet_access_token, preferences, updated_at)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT(account) DO UPDATE SET email = excluded.email, second_email = excluded.second_email,
            pushbullet_access_token = excluded.pushbullet_access_token, preferences = excluded.preferences,
            updated_at = excluded.updated_at
        """,
        (info.account, info.email, info.second_email, info.pushbullet_access_token, preferences, now),
    )


def notice_addresses(conn: Connection, event_id: str, account: str) -> tuple[str, ...]:
    """The extra addresses recorded for the `ContactInfo/Change` event `event_id` of `account` (none if unknown)."""
    row = conn.execute(
        "SELECT addresses FROM account_contact_notices WHERE event_id = ? AND account = ?", (event_id, account)
    ).fetchone()
    return tuple(json.loads(row[0])) if row else ()


def apply_updates(before: AccountContactInfo, updates: Mapping[str, str | bool]) -> AccountContactInfo:
    """`before` with the validated `updates` applied; fields not given keep their value."""
    preferences = dict(before.preferences)
    strings = {"email": before.email, "second_email": before.second_email}
    token = before.pushbullet_access_token
    for name, value in updates.items():
        if name in PREFERENCE_DEFAULTS:
            preferences[name] = bool(value)
        elif name == "pushbullet_access_token":
            token = str(value)
        else:
            strings[name] = str(value)
    return AccountContactInfo(
        account=before.account,
        email=strings["email"],
        second_email=strings["second_email"],
        pushbullet_access_token=token,
        preferences=preferences,
    )


def plan_notice(before: AccountContactInfo, after: AccountContactInfo, *, ip: str | None = None) -> ChangeNotice | None:
    """The `ContactInfo/Change` notice the change from `before` to `after` calls for, or None.

    Guards and `notify_contact_address_change` are read as they were before the change (seeds/README), so a
    user cannot silence the notice by switching its guard off in the same save.
    """
    disabled: list[str] = []
    for spec in ACCOUNT_FIELDS:
        name = spec.name
        guard = name if name in GUARDS else next((g for g, pref in GUARDS.items() if pref == name), None)
        if guard is None or not before.preferences[guard]:
            continue
        if before.preferences[name] and not after.preferences[name]:
            disabled.append(name)
    address_changed = before.email != after.email or before.second_email != after.second_email
    tell_addresses = address_changed and before.preferences["notify_contact_address_change"]
    if not disabled and not tell_addresses:
        return None

    new_lower = {address.lower() for address in after.addresses}
    extra = tuple(a for a in before.addresses if a.lower() not in new_lower) if tell_addresses else ()
    changes = []
    for spec in ACCOUNT_FIELDS:
        old, new = before.value(spec.name), after.value(spec.name)
        if old == new:
            continue
        change: dict[str, Any] = {"name": spec.name, "description": _FIELD_DESCRIPTIONS[spec.name]}
        if not spec.secret:  # a token appears by name only (it is a secret)
            change.update(old=old, new=new)
        changes.append(change)
    data: dict[str, Any] = {
        "user": before.account,
        "changes": changes,
        "disabled_preferences": [{"name": n, "description": _FIELD_DESCRIPTIONS[n]} for n in disabled],
        "address_changed": address_changed,
        "old_email": before.email,
        "new_email": after.email,
        "old_second_email": before.second_email,
        "new_second_email": after.second_email,
        "old_addresses": list(before.addresses),
        "new_addresses": list(after.addresses),
        "notify_addresses": list(extra),
    }
    if ip:
        data["ip"] = ip
    return ChangeNotice(event_id=str(uuid.uuid4()), data=data, extra_addresses=extra)


def save_contact_info(
    conn: Connection, account: str, updates: Mapping[str, str | bool], *, ip: str | None = None
) -> tuple[AccountContactInfo, ChangeNotice | None]:
    """Apply validated updates to the account (creating its row if needed); record the notice's extra addresses."""
    before = read_contact_info(conn, account)
    after = apply_updates(before, updates)
    now = _now()
    _write_contact_info(conn, after, now)
    notice = plan_notice(before, after, ip=ip)
    if notice is not None and notice.extra_addresses:
        conn.execute(
            "INSERT INTO account_contact_notices (event_id, account, addresses, created_at) VALUES (?, ?, ?, ?)",
            (notice.event_id, account, json.dumps(list(notice.extra_addresses)), now),
        )
    return after, notice


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# -- async API ---------------------------------------------------------------------------------------------------


def check_account(account: str) -> None:
    """Refuse an account name that cannot be one (`InvalidInput` naming `account`)."""
    problem = account_name_problem(account)
    if problem:
        raise InvalidInput([f"account: {problem}"])


async def get_contact_info(store: Store, account: str) -> AccountContactInfo:
    """The account's settings (defaults when never saved)."""
    check_account(account)
    return await store.run(lambda conn: read_contact_info(conn, account))


async def update_contact_info(
    dispatcher: Dispatcher, account: str, raw_updates: Mapping[str, Any], *, ip: str | None = None
) -> AccountContactInfo:
    """Validate and store a partial update of the account's settings, then raise the notice it calls for.

    Raises `InvalidInput` naming every bad field, and then nothing is changed. The notice is raised through
    `dispatcher.accept(..., source="internal")` after the change is committed.
    """
    check_account(account)
    updates = validate_account_updates(raw_updates)
    after, notice = await dispatcher.store.run(lambda conn: save_contact_info(conn, account, updates, ip=ip))
    log.info("account_contact_info_saved", account=account, fields=sorted(updates))
    if notice is not None:
        now = datetime.now(UTC)
        event = Event(
            id=notice.event_id,
            type=CHANGE_EVENT_TYPE,
            occurred_at=now,
            host=dispatcher.config.hostname,
            account=account,
            client_id=None,
            data=notice.data,
            received_at=now,
        )
        await dispatcher.accept([event], source="internal")
        log.info(
            "contact_change_notice_raised",
            account=account,
            event_id=event.id,
            disabled=[d["name"] for d in notice.data["disabled_preferences"]],
            address_changed=notice.data["address_changed"],
        )
    return after


__all__ = [
    "CHANGE_EVENT_TYPE",
    "ChangeNotice",
    "apply_updates",
    "get_contact_info",
    "notice_addresses",
    "plan_notice",
    "read_contact_info",
    "save_contact_info",
    "update_contact_info",
]
