"""Notices on change: guard notices and address-change notices raise `ContactInfo/Change` (seeds/README)."""

from __future__ import annotations

from typing import Any

from dispatcher.catalog import load_catalog
from dispatcher.contacts.accounts import CHANGE_EVENT_TYPE
from dispatcher.contacts.model import GUARDS
from dispatcher.contacts.recipients import AccountContacts
from dispatcher.events import Event

from . import contacts_harness
from .contacts_harness import ContactsApi

contacts_api = contacts_harness.contacts_api  # the fixture, shared with the other contacts tests

PATH = "/api/v1/accounts/bob/contact-info"


async def put(api: ContactsApi, **fields: Any) -> list[Event]:
    """PUT the fields; the events the change raised."""
    before = len(api.daemon.accepted)
    status, body = await api.call("PUT", PATH, json=fields)
    assert status == 200, body
    return [event for event, _ in api.daemon.accepted[before:]]


def disabled(event: Event) -> list[str]:
    return [item["name"] for item in event.data["disabled_preferences"]]


async def test_turning_a_guarded_preference_off_notifies_the_account(contacts_api: ContactsApi) -> None:
    """With its guard on (the default), switching a guarded preference from on to off raises one
    `ContactInfo/Change` for the account, through `accept(source="internal")`, naming the preference."""
    await put(contacts_api, email="bob@example.com")
    for guard, preference in GUARDS.items():
        (event,) = await put(contacts_api, **{preference: False})
        assert (event.type, event.account, event.client_id) == (CHANGE_EVENT_TYPE, "bob", None)
        assert disabled(event) == [preference], guard
        assert {"name": preference, "description": event.data["changes"][0]["description"],
                "old": True, "new": False} in event.data["changes"]  # fmt: skip
        assert contacts_api.daemon.accepted[-1][1] == "internal"
        assert event.host == "contacts.example.com"
        assert await put(contacts_api, **{preference: True}) == []  # switching back on tells nothing


async def test_switching_a_guard_off_notifies_and_then_silences(contacts_api: ContactsApi) -> None:
    """Switching a guard off is itself notified (it was on before the change); afterwards, turning its preference
    off tells nothing, since the guard is read as it was before each change."""
    await put(contacts_api, email="bob@example.com")
    guard = "notify_password_change_notification_disabled"
    (event,) = await put(contacts_api, **{guard: False})
    assert disabled(event) == [guard]
    assert await put(contacts_api, notify_password_change=False) == []


async def test_guard_and_preference_off_in_one_save_still_notifies(contacts_api: ContactsApi) -> None:
    """Switching a preference and its guard off in the same save cannot silence the notice: one event names both."""
    await put(contacts_api, email="bob@example.com")
    (event,) = await put(
        contacts_api, notify_account_login=False, notify_account_login_notification_disabled=False,
        notify_disk_limit=False,
    )  # fmt: skip
    assert disabled(event) == ["notify_account_login", "notify_account_login_notification_disabled"]
    assert {c["name"] for c in event.data["changes"]} == {
        "notify_account_login", "notify_account_login_notification_disabled", "notify_disk_limit",
    }  # fmt: skip


async def test_unguarded_changes_and_token_changes_raise_nothing(contacts_api: ContactsApi) -> None:
    """Preferences without a guard, and a new Pushbullet token, change silently."""
    await put(contacts_api, email="bob@example.com")
    assert await put(contacts_api, notify_disk_limit=False, notify_ssl_expiry=False) == []
    assert await put(contacts_api, pushbullet_access_token="o.Secret123") == []


async def test_address_change_is_told_to_old_and_new_addresses(contacts_api: ContactsApi) -> None:
    """With `notify_contact_address_change` on, changing the addresses raises a notice whose data gives the old
    and new addresses, and the account source sends it to both (the old one as a recorded extra target)."""
    (first,) = await put(contacts_api, email="old@example.com", second_email="keep@example.com")
    assert first.data["old_addresses"] == [] and first.data["new_addresses"] == ["old@example.com", "keep@example.com"]
    (event,) = await put(contacts_api, email="new@example.com", pushbullet_access_token="o.Tok3n")
    data = event.data
    assert data["address_changed"] is True and disabled(event) == []
    assert (data["old_email"], data["new_email"]) == ("old@example.com", "new@example.com")
    assert (data["old_second_email"], data["new_second_email"]) == ("keep@example.com", "keep@example.com")
    assert data["old_addresses"] == ["old@example.com", "keep@example.com"]
    assert data["new_addresses"] == ["new@example.com", "keep@example.com"]
    assert data["notify_addresses"] == ["old@example.com"]
    token_change = next(c for c in data["changes"] if c["name"] == "pushbullet_access_token")
    assert "old" not in token_change and "new" not in token_change
    assert "o.Tok3n" not in str(event.data)

    catalog = load_catalog()
    (candidate,) = await AccountContacts(contacts_api.store).candidates(event, catalog.get(event.type), None)
    assert candidate.suppressed is None
    assert candidate.recipient.targets["email"] == ("new@example.com", "keep@example.com", "old@example.com")
    assert candidate.recipient.targets["pushbullet"] == ("o.Tok3n",)


async def test_address_change_is_silent_when_its_preference_was_off(contacts_api: ContactsApi) -> None:
    """With `notify_contact_address_change` off (and its guard off, so that switching it off is silent too),
    an address change raises nothing."""
    await put(contacts_api, email="old@example.com")
    await put(contacts_api, notify_contact_address_change_notification_disabled=False)
    assert await put(contacts_api, notify_contact_address_change=False) == []
    assert await put(contacts_api, email="new@example.com") == []


async def test_notice_data_carries_the_catalog_fields(contacts_api: ContactsApi) -> None:
    """The notice's data gives every field the catalog lists for `ContactInfo/Change` that the contacts module
    knows (all but `domain`, which belongs to the account's hosting, not its contact info)."""
    await put(contacts_api, email="old@example.com")
    (event,) = await put(contacts_api, email="new@example.com", notify_password_change=False)
    fields = set(load_catalog().get(CHANGE_EVENT_TYPE).fields)
    assert fields - {"domain"} <= set(event.data)
    assert event.data["user"] == "bob" and event.data["ip"] == "127.0.0.1"


async def test_a_refused_change_raises_nothing(contacts_api: ContactsApi) -> None:
    """A change refused for a bad field raises no notice, even though its other fields would have."""
    await put(contacts_api, email="old@example.com")
    before = len(contacts_api.daemon.accepted)
    status, _ = await contacts_api.call(
        "PUT", PATH, json={"email": "new@example.com", "notify_password_change": False, "notify_disk_limit": 7}
    )
    assert status == 422
    assert len(contacts_api.daemon.accepted) == before


async def test_cpanel_save_raises_the_same_notices(contacts_api: ContactsApi) -> None:
    """savecontactinfo goes through the same rules: turning a guarded preference off raises the notice."""
    await contacts_api.cpanel("savecontactinfo", username="bob", email="bob@example.com")
    before = len(contacts_api.daemon.accepted)
    result = await contacts_api.cpanel("savecontactinfo", username="bob", notify_twofactorauth_change="0")
    assert result["event"] == {"result": 1}
    (event,) = contacts_api.daemon.events[before:]
    assert disabled(event) == ["notify_twofactorauth_change"]
