"""The account and client recipient sources, alone and through the planner, against the shipped catalog."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispatcher.catalog import AlertType, Catalog, load_catalog
from dispatcher.config import parse_config
from dispatcher.contacts import recipient_sources
from dispatcher.contacts.accounts import CHANGE_EVENT_TYPE, save_contact_info
from dispatcher.contacts.clients import add_contact, create_client
from dispatcher.contacts.model import validate_account_updates, validate_client_fields, validate_contact_fields
from dispatcher.contacts.recipients import AccountContacts, ClientContacts
from dispatcher.events import Event
from dispatcher.routing import plan_event
from dispatcher.store import Store

from . import contacts_harness

store = contacts_harness.store  # the fixture, shared with the other contacts tests


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def event(type_: str, *, account: str | None = "bob", client_id: int | None = None, **data: Any) -> Event:
    now = datetime.now(UTC)
    return Event(str(uuid.uuid4()), type_, now, "host.example.com", account, client_id, data, now)


async def save_account(store: Store, account: str, **fields: Any) -> None:
    updates = validate_account_updates(fields)
    await store.run(lambda conn: save_contact_info(conn, account, updates))


async def make_client(store: Store, **fields: Any) -> int:
    client = await create_client(store, validate_client_fields(fields, creating=True))
    return client.id


async def make_contact(store: Store, client_id: int, **fields: Any) -> int:
    contact = await add_contact(store, client_id, validate_contact_fields(fields))
    return contact.id


# -- accounts ----------------------------------------------------------------------------------------------------


async def test_account_event_goes_to_addresses_and_token_when_its_preference_is_on(
    store: Store, catalog: Catalog
) -> None:
    """An account event of a type whose audience includes accounts proposes `account:bob` with both email
    addresses and the Pushbullet token, and no thresholds: importance does not filter it."""
    await save_account(store, "bob", email="bob@example.com", second_email="bob2@example.net",
                       pushbullet_access_token="o.Tok3n")  # fmt: skip
    alert = catalog.get("Quota/DiskWarning")
    assert alert.preference == "notify_disk_limit" and "account" in alert.audience
    (candidate,) = await AccountContacts(store).candidates(event("Quota/DiskWarning"), alert, None)
    recipient = candidate.recipient
    assert candidate.suppressed is None
    assert (recipient.kind, recipient.name, recipient.thresholds) == ("account", "account:bob", None)
    assert dict(recipient.targets) == {"email": ("bob@example.com", "bob2@example.net"), "pushbullet": ("o.Tok3n",)}
    assert "o.Tok3n" not in repr(recipient)


async def test_account_event_is_suppressed_when_its_preference_is_off(store: Store, catalog: Catalog) -> None:
    """With the gating preference off, the account is proposed suppressed, with the preference named."""
    await save_account(store, "bob", email="bob@example.com", notify_disk_limit=False)
    (candidate,) = await AccountContacts(store).candidates(
        event("Quota/DiskWarning"), catalog.get("Quota/DiskWarning"), None
    )
    assert candidate.suppressed == "preference notify_disk_limit off"
    (other,) = await AccountContacts(store).candidates(
        event("BandwidthUsageExceeded/Owner"), catalog.get("BandwidthUsageExceeded/Owner"), None
    )
    assert other.suppressed is None


async def test_account_source_ignores_system_types_and_events_without_account(store: Store, catalog: Catalog) -> None:
    """A type for system contacts only, or an event with no account, proposes nobody; an account never saved is
    proposed without addresses (the planner then says "no address")."""
    await save_account(store, "bob", email="bob@example.com")
    source = AccountContacts(store)
    system_only = next(a for a in (catalog.get(k) for k in ("Backup/Failure", "killacct/Notify")))
    assert "account" not in system_only.audience
    assert await source.candidates(event(system_only.key), system_only, None) == []
    assert (
        await source.candidates(event("Quota/DiskWarning", account=None), catalog.get("Quota/DiskWarning"), None) == []
    )
    (stranger,) = await source.candidates(
        event("Quota/DiskWarning", account="zed"), catalog.get("Quota/DiskWarning"), None
    )
    assert stranger.recipient.targets == {} and stranger.suppressed is None


async def test_known_netblock_login_needs_its_own_preference(store: Store, catalog: Catalog) -> None:
    """A login notice gated by `notify_account_login`, from a known netblock, also needs
    `notify_account_login_for_known_netblock`."""
    alert = dataclasses.replace(catalog.get("Quota/DiskWarning"), key="cPHulk/Login", preference="notify_account_login")
    await save_account(store, "bob", email="bob@example.com", notify_account_login_for_known_netblock=False)
    source = AccountContacts(store)
    (known,) = await source.candidates(event("cPHulk/Login", known_netblock=True), alert, None)
    assert known.suppressed == "preference notify_account_login_for_known_netblock off"
    (new,) = await source.candidates(event("cPHulk/Login", known_netblock=False), alert, None)
    assert new.suppressed is None


async def test_contact_change_goes_to_the_account_alone_and_only_to_recorded_old_addresses(
    store: Store, catalog: Catalog
) -> None:
    """`ContactInfo/Change` reaches the account (no preference gates the notice itself) and the old addresses
    recorded with that very event; a forged event naming other addresses reaches only the current ones, and the
    client source proposes nobody for it."""
    await save_account(store, "bob", email="old@example.com")
    updates = validate_account_updates({"email": "new@example.com"})
    _, notice = await store.run(lambda conn: save_contact_info(conn, "bob", updates))
    assert notice is not None and notice.extra_addresses == ("old@example.com",)
    alert = catalog.get(CHANGE_EVENT_TYPE)
    await make_client(store, email="owner@example.com", accounts=["bob"])
    now = datetime.now(UTC)
    real = Event(notice.event_id, CHANGE_EVENT_TYPE, now, "h", "bob", None, notice.data, now)
    forged = event(CHANGE_EVENT_TYPE, notify_addresses=["victim@example.org", "old@example.com"])
    account_source, client_source = recipient_sources(store)
    (candidate,) = await account_source.candidates(real, alert, None)
    assert candidate.suppressed is None
    assert candidate.recipient.targets["email"] == ("new@example.com", "old@example.com")
    (forged_candidate,) = await account_source.candidates(forged, alert, None)
    assert forged_candidate.recipient.targets["email"] == ("new@example.com",)
    assert await client_source.candidates(real, alert, None) == []


# -- clients -----------------------------------------------------------------------------------------------------


async def test_client_event_goes_to_client_and_contacts_by_category(store: Store, catalog: Catalog) -> None:
    """A `domain` category event with `client_id` proposes the client and every contact with an address; those
    whose `email_preferences[domain]` is off are suppressed with the reason."""
    client_id = await make_client(store, email="owner@example.com")
    on = await make_contact(store, client_id, email="on@example.com", email_preferences={"domain": True})
    off = await make_contact(store, client_id, email="off@example.com", email_preferences={"product": True})
    alert = catalog.get("AutoSSL/CertificateExpiring")
    assert alert.category == "domain"
    candidates = await ClientContacts(store).candidates(
        event(alert.key, account=None, client_id=client_id), alert, None
    )
    got = [(c.recipient.kind, c.recipient.name, dict(c.recipient.targets), c.suppressed) for c in candidates]
    assert got == [
        ("client", f"client:{client_id}", {"email": ("owner@example.com",)}, None),
        ("contact", f"contact:{on}", {"email": ("on@example.com",)}, None),
        ("contact", f"contact:{off}", {"email": ("off@example.com",)}, "email_preferences[domain] off"),
    ]
    assert all(c.recipient.thresholds is None for c in candidates)


async def test_client_found_through_the_account_and_gated_by_its_own_preferences(
    store: Store, catalog: Catalog
) -> None:
    """With no `client_id`, the client owning the event's account is used; the client's own preference for the
    category gates it like a contact's; a type without category or an account without client gives nobody."""
    client_id = await make_client(store, email="owner@example.com", accounts=["bob"],
                                  email_preferences={"product": False})  # fmt: skip
    await make_contact(store, client_id, email="c@example.com", email_preferences={"product": True})
    source = ClientContacts(store)
    alert = catalog.get("Quota/DiskWarning")
    assert alert.category == "product"
    candidates = await source.candidates(event(alert.key), alert, None)
    assert [(c.recipient.name, c.suppressed) for c in candidates] == [
        (f"client:{client_id}", "email_preferences[product] off"),
        ("contact:1", None),
    ]
    assert await source.candidates(event(alert.key, account="nobody"), alert, None) == []
    assert await source.candidates(event(alert.key, account=None, client_id=999), alert, None) == []
    no_category = catalog.get("ChangePassword/User")
    assert no_category.category is None
    assert await source.candidates(event(no_category.key), no_category, None) == []


# -- through the planner -----------------------------------------------------------------------------------------


async def test_planner_delivers_account_and_client_recipients_once_per_address(
    store: Store, catalog: Catalog, tmp_path: Path
) -> None:
    """Through `plan_event`, a low-importance account event reaches the account's addresses and token, the
    client and its opted-in contacts; an address shared by the account and a contact is delivered once."""
    config = parse_config("hostname: h.example.com\nimportance:\n  Quota/*: low\n", base_dir=tmp_path)
    await save_account(store, "bob", email="bob@example.com", pushbullet_access_token="o.Tok3n")
    client_id = await make_client(store, email="owner@example.com", accounts=["bob"])
    await make_contact(store, client_id, email="BOB@example.com", email_preferences={"product": True})
    await make_contact(store, client_id, email="quiet@example.com")
    plan = await plan_event(
        event("Quota/DiskWarning"), config=config, catalog=catalog, sources=recipient_sources(store),
        channels={"email", "pushbullet"},
    )  # fmt: skip
    sent = [(d.recipient.name, d.channel, d.target) for d in plan.deliveries]
    assert sent == [
        ("account:bob", "email", "bob@example.com"),
        ("account:bob", "pushbullet", "o.Tok3n"),
        (f"client:{client_id}", "email", "owner@example.com"),
    ]
    reasons = {(s.recipient_name, s.reason) for s in plan.suppressed}
    assert reasons == {("contact:1", "duplicate of account:bob"), ("contact:2", "email_preferences[product] off")}

    await save_account(store, "bob", notify_disk_limit=False)
    plan = await plan_event(
        event("Quota/DiskWarning"), config=config, catalog=catalog, sources=recipient_sources(store),
        channels={"email", "pushbullet"},
    )  # fmt: skip
    assert ("account:bob", "preference notify_disk_limit off") in {
        (s.recipient_name, s.reason) for s in plan.suppressed
    }
    assert isinstance(catalog.get("Quota/DiskWarning"), AlertType)
