"""Contacts as users manage them: account contact info (cPanel), billing clients and their contacts (WHMCS).

What the daemon wires in:

- `SCHEMA`: the module's tables, for `Store(path, schemas=[..., SCHEMA])`;
- `setup_routes(app)`: the native REST routes (`/api/v1/accounts/…`, `/api/v1/clients…`, `/api/v1/contacts/…`)
  and the two compatibility dialects (`/json-api/cpanel`, `/includes/api.php`), all behind the bearer token;
- `recipient_sources(store)`: the planner's `AccountContacts` and `ClientContacts` sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .schema import SCHEMA

if TYPE_CHECKING:
    from ..routing.recipients import RecipientSource
    from ..store import Store

__all__ = ["SCHEMA", "recipient_sources", "setup_routes"]


def setup_routes(app: web.Application) -> None:
    """Mount the REST, cPanel and WHMCS routes on `app` (whose `DISPATCHER` key holds the running daemon)."""
    from . import cpanel, rest, whmcs

    rest.setup(app)
    cpanel.setup(app)
    whmcs.setup(app)


def recipient_sources(store: Store) -> list[RecipientSource]:
    """The account and client sources, reading `store`: `[AccountContacts(store), ClientContacts(store)]`."""
    from .recipients import AccountContacts, ClientContacts

    return [AccountContacts(store), ClientContacts(store)]
