"""Contacts as users manage them: account contact info (cPanel), billing clients and their contacts (WHMCS).

The domain only: the web dialects that reach it (the native REST routes, cPanel's `/json-api/cpanel`, WHMCS's
`/includes/api.php`) live in `dispatcher/http/` (`contacts_api`, `cpanel`, `whmcs`) and call this package; it
imports no web code.

What the daemon wires in:

- `SCHEMA`: the module's tables, for `Store(path, schemas=[..., SCHEMA])`;
- `recipient_sources(store)`: the planner's `AccountContacts` and `ClientContacts` sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .recipients import AccountContacts, ClientContacts
from .schema import SCHEMA

if TYPE_CHECKING:
    from ..routing.recipients import RecipientSource
    from ..store import Store

__all__ = ["SCHEMA", "recipient_sources"]


def recipient_sources(store: Store) -> list[RecipientSource]:
    """The account and client sources, reading `store`: `[AccountContacts(store), ClientContacts(store)]`."""
    return [AccountContacts(store), ClientContacts(store)]
