"""The two recipient sources the contacts module gives the planner (SPEC §3).

- `AccountContacts`: an event with `account` whose catalog audience includes `account` goes to the account's
  `email`, `second_email` (email channel) and Pushbullet token, unless the type's gating `notify_*` preference
  is off. Importance does not filter them (`thresholds=None`). `ContactInfo/Change` concerns the account alone
  and is decided when raised, so no preference gates it; it also reaches the previous addresses recorded with it.
- `ClientContacts`: an event whose catalog entry has a WHMCS category goes by email to the client (the event's
  `client_id`, else the client owning `account`) and to each contact, each one gated by its own
  `email_preferences[category]`.

A recipient with no address is still proposed, so that `dispatcher routes` can say "no address".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from ..routing.recipients import Candidate, Recipient
from .accounts import CHANGE_EVENT_TYPE, notice_addresses, read_contact_info
from .clients import client_and_contacts, client_of_account
from .model import AccountContactInfo, account_name_problem, unique_addresses

if TYPE_CHECKING:
    from ..catalog import AlertType
    from ..engines import Connection
    from ..events import Event
    from ..store import Store

log = structlog.get_logger(__name__)

# Types outside the Contact Manager table that concern only an account (SPEC §10).
ACCOUNT_ONLY_TYPES = frozenset({CHANGE_EVENT_TYPE})

# `notify_account_login_for_known_netblock` refines `notify_account_login`: a login from a known netblock
# (the event's `data.known_netblock` is true) is only told when it is on as well.
_LOGIN_PREFERENCE = "notify_account_login"
_KNOWN_NETBLOCK_PREFERENCE = "notify_account_login_for_known_netblock"


def account_recipient(info: AccountContactInfo, extra_addresses: tuple[str, ...] = ()) -> Recipient:
    """The account as a recipient: its addresses by email, its token by Pushbullet; no thresholds."""
    targets: dict[str, tuple[str, ...]] = {}
    emails = unique_addresses((*info.addresses, *extra_addresses))
    if emails:
        targets["email"] = emails
    if info.pushbullet_access_token:
        targets["pushbullet"] = (info.pushbullet_access_token,)
    return Recipient(kind="account", name=f"account:{info.account}", targets=targets, thresholds=None)


class AccountContacts:
    """Proposes the event's account, with the reason when its preferences keep it from the event."""

    name = "account"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def candidates(self, event: Event, alert: AlertType, config: Any) -> list[Candidate]:
        account = event.account
        account_only = event.type in ACCOUNT_ONLY_TYPES
        if not account or (not account_only and "account" not in alert.audience):
            return []
        if account_name_problem(account):
            return []  # no account can have such a name, so none has contact info

        def read(conn: Connection) -> tuple[AccountContactInfo, tuple[str, ...]]:
            info = read_contact_info(conn, account)
            return info, notice_addresses(conn, event.id, account) if account_only else ()

        info, recorded = await self.store.run(read)
        extra: tuple[str, ...] = ()
        if account_only:
            # Only the previous addresses recorded with this very event are honoured: `data.notify_addresses`
            # of an event published from outside cannot send mail anywhere else.
            asked = {str(a).lower() for a in event.data.get("notify_addresses", ()) or ()}
            extra = tuple(a for a in recorded if a.lower() in asked)
        candidate = Candidate(account_recipient(info, extra), suppressed=self._gate(event, alert, info, account_only))
        return [candidate]

    @staticmethod
    def _gate(event: Event, alert: AlertType, info: AccountContactInfo, account_only: bool) -> str | None:
        preference = None if account_only else alert.preference
        if preference is None:
            return None
        if not info.preferences.get(preference, True):
            return f"preference {preference} off"
        if (
            preference == _LOGIN_PREFERENCE
            and event.data.get("known_netblock") is True
            and not info.preferences[_KNOWN_NETBLOCK_PREFERENCE]
        ):
            return f"preference {_KNOWN_NETBLOCK_PREFERENCE} off"
        return None


class ClientContacts:
    """Proposes the billing client and each of its contacts for events with a WHMCS email category."""

    name = "client"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def candidates(self, event: Event, alert: AlertType, config: Any) -> list[Candidate]:
        category = alert.category
        if category is None or (event.client_id is None and not event.account):
            return []

        def read(conn: Connection) -> Any:
            client_id = event.client_id
            if client_id is None and event.account:
                client_id = client_of_account(conn, event.account)
            return None if client_id is None else client_and_contacts(conn, client_id)

        found = await self.store.run(read)
        if found is None:
            return []
        client, contacts = found
        off = f"email_preferences[{category}] off"
        candidates = [
            Candidate(
                Recipient(
                    kind="client",
                    name=f"client:{client.id}",
                    targets={"email": (client.email,)} if client.email else {},
                    thresholds=None,
                ),
                suppressed=None if client.email_preferences.get(category, False) else off,
            )
        ]
        candidates.extend(
            Candidate(
                Recipient(
                    kind="contact",
                    name=f"contact:{contact.id}",
                    targets={"email": (contact.email,)} if contact.email else {},
                    thresholds=None,
                ),
                suppressed=None if contact.email_preferences.get(category, False) else off,
            )
            for contact in contacts
        )
        return candidates
