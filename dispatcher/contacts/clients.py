"""Billing clients and their contacts (WHMCS) in the store.

Every change is one store job that checks everything it depends on (the client exists, the email is free, the
ICANN rule holds) before it writes, and raises otherwise: the store rolls the job back, so a refused change
leaves nothing behind. Rules:

- Email addresses identify people. Within a client, no two of the client and its contacts share an address. A
  sub-account's address is a login (seed 003: "unique if the contact will be a sub-account"), so it also may not be
  any client's address or another sub-account's; a client's address likewise may not be a sub-account's.
  Addresses compare without regard to case (`lower(email) = lower(?)`, on both engines). A clash is
  `Conflict("Duplicate Email Address")`.
- ICANN (seed 002): a change that stops a contact (or the client) receiving domain emails, or deletes a contact
  that receives them, is refused unless the client or another contact still receives them.
- `password2` is kept only as a salted scrypt hash, and only for a sub-account; it is never returned.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from ..engines import Connection
from ..engines.base import CONTACTS_WRITES, one_writer_at_a_time
from .model import (
    CATEGORIES,
    CLIENT_DEFAULT_PREFERENCES,
    CLIENT_NOT_FOUND,
    CONTACT_DEFAULT_PREFERENCES,
    CONTACT_NOT_FOUND,
    CONTACT_TEXT_FIELDS,
    DUPLICATE_EMAIL,
    FLAG_OF,
    ICANN_RULE,
    Client,
    Conflict,
    Contact,
    InvalidInput,
    NotFound,
)

if TYPE_CHECKING:
    from ..store import Store

log = structlog.get_logger(__name__)

T = TypeVar("T")

_FLAGS = tuple(FLAG_OF[c] for c in CATEGORIES)
_CONTACT_COLUMNS = (
    "id",
    "client_id",
    *CONTACT_TEXT_FIELDS,
    "email",
    "country",
    "subaccount",
    "password_hash",
    "permissions",
    *_FLAGS,
    "created_at",
    "updated_at",
)
_CLIENT_COLUMNS = ("id", "email", "firstname", "lastname", "companyname", *_FLAGS, "created_at", "updated_at")
# The fields GetContacts filters on, by exact value (email and country without regard to case).
FILTER_FIELDS = (*CONTACT_TEXT_FIELDS, "email", "country", "subaccount")

# scrypt cost: 128 * 2**14 * 8 bytes = 16 MiB and some tens of milliseconds per hash (RFC 7914's interactive level).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


# -- passwords ---------------------------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """A salted scrypt hash of `password`: `scrypt$N$r$p$salt$digest` (base64)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return "$".join(["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        given = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(given, expected)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


async def _with_password_hashed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` with `password2` replaced by `password_hash`; hashing is slow on purpose, so not in the event loop."""
    clean = dict(fields)
    password = clean.pop("password2", None)
    if password is not None:
        clean["password_hash"] = await asyncio.to_thread(hash_password, password)
    return clean


# -- rows --------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _contact_from_row(row: Sequence[Any]) -> Contact:
    values = dict(zip(_CONTACT_COLUMNS, row, strict=True))
    return Contact(
        id=values["id"],
        client_id=values["client_id"],
        **{name: values[name] for name in CONTACT_TEXT_FIELDS},
        email=values["email"],
        country=values["country"],
        subaccount=bool(values["subaccount"]),
        password_set=values["password_hash"] is not None,
        permissions=tuple(p for p in values["permissions"].split(",") if p),
        email_preferences={category: bool(values[FLAG_OF[category]]) for category in CATEGORIES},
        created_at=values["created_at"],
        updated_at=values["updated_at"],
    )


def _select_contacts(where: str = "", params: Sequence[Any] = (), suffix: str = "") -> tuple[str, Sequence[Any]]:
    return f"SELECT {', '.join(_CONTACT_COLUMNS)} FROM client_contacts {where} {suffix}", params


def read_contact(conn: Connection, contact_id: int) -> Contact | None:
    sql, params = _select_contacts("WHERE id = ?", (contact_id,))
    row = conn.execute(sql, params).fetchone()
    return _contact_from_row(row) if row else None


def read_client(conn: Connection, client_id: int) -> Client | None:
    row = conn.execute(f"SELECT {', '.join(_CLIENT_COLUMNS)} FROM clients WHERE id = ?", (client_id,)).fetchone()
    if row is None:
        return None
    values = dict(zip(_CLIENT_COLUMNS, row, strict=True))
    accounts = tuple(
        account
        for (account,) in conn.execute(
            "SELECT account FROM client_accounts WHERE client_id = ? ORDER BY account", (client_id,)
        )
    )
    return Client(
        id=values["id"],
        email=values["email"],
        firstname=values["firstname"],
        lastname=values["lastname"],
        companyname=values["companyname"],
        email_preferences={category: bool(values[FLAG_OF[category]]) for category in CATEGORIES},
        accounts=accounts,
        created_at=values["created_at"],
        updated_at=values["updated_at"],
    )


def contacts_of(conn: Connection, client_id: int) -> list[Contact]:
    sql, params = _select_contacts("WHERE client_id = ?", (client_id,), "ORDER BY id")
    return [_contact_from_row(row) for row in conn.execute(sql, params)]


def client_of_account(conn: Connection, account: str) -> int | None:
    row = conn.execute("SELECT client_id FROM client_accounts WHERE account = ?", (account,)).fetchone()
    return row[0] if row else None


def _require_client(conn: Connection, client_id: int) -> Client:
    client = read_client(conn, client_id)
    if client is None:
        raise NotFound(CLIENT_NOT_FOUND, [f"clientid: no client {client_id}"])
    return client


def _require_contact(conn: Connection, contact_id: int) -> Contact:
    contact = read_contact(conn, contact_id)
    if contact is None:
        raise NotFound(CONTACT_NOT_FOUND, [f"contactid: no contact {contact_id}"])
    return contact


# -- rules -------------------------------------------------------------------------------------------------------


def _contact_email_clash(
    conn: Connection, email: str, *, client_id: int, contact_id: int | None, subaccount: bool
) -> None:
    """Raise `Conflict(Duplicate Email Address)` if a contact of `client_id` may not use `email`."""
    if not email:
        return
    if conn.execute("SELECT 1 FROM clients WHERE id = ? AND lower(email) = lower(?)", (client_id, email)).fetchone():
        raise Conflict(DUPLICATE_EMAIL, ["email: already the client's own address"])
    others, other_params = _other_than("id", contact_id)
    row = conn.execute(
        f"SELECT id FROM client_contacts WHERE client_id = ? AND lower(email) = lower(?){others}",
        (client_id, email, *other_params),
    ).fetchone()
    if row:
        raise Conflict(DUPLICATE_EMAIL, [f"email: already used by contact {row[0]} of this client"])
    if subaccount:
        if conn.execute("SELECT 1 FROM clients WHERE lower(email) = lower(?)", (email,)).fetchone():
            raise Conflict(DUPLICATE_EMAIL, ["email: a sub-account login, already another client's address"])
        if conn.execute(
            f"SELECT 1 FROM client_contacts WHERE subaccount = 1 AND lower(email) = lower(?){others}",
            (email, *other_params),
        ).fetchone():
            raise Conflict(DUPLICATE_EMAIL, ["email: a sub-account login, already another sub-account's address"])


def _client_email_clash(conn: Connection, email: str, *, client_id: int | None) -> None:
    """Raise `Conflict(Duplicate Email Address)` if the client `client_id` (None: a new one) may not use `email`."""
    others, other_params = _other_than("id", client_id)
    row = conn.execute(
        f"SELECT id FROM clients WHERE lower(email) = lower(?){others}", (email, *other_params)
    ).fetchone()
    if row:
        raise Conflict(DUPLICATE_EMAIL, ["email: already another client's address"])
    if conn.execute(
        "SELECT 1 FROM client_contacts WHERE subaccount = 1 AND lower(email) = lower(?)", (email,)
    ).fetchone():
        raise Conflict(DUPLICATE_EMAIL, ["email: already a sub-account's login"])
    if (
        client_id is not None
        and conn.execute(
            "SELECT 1 FROM client_contacts WHERE client_id = ? AND lower(email) = lower(?)", (client_id, email)
        ).fetchone()
    ):
        raise Conflict(DUPLICATE_EMAIL, ["email: already one of this client's contacts"])


def _domain_mail_kept(conn: Connection, client_id: int, *, without_contact: int | None, client_on: bool) -> None:
    """Raise the ICANN refusal unless someone of the client still receives domain emails: the client itself, or
    another contact with domain emails on and an address to receive them at."""
    if client_on:
        return
    others, other_params = _other_than("id", without_contact)
    if conn.execute(
        f"SELECT 1 FROM client_contacts WHERE client_id = ? AND domainemails = 1 AND email != ''{others}",
        (client_id, *other_params),
    ).fetchone():
        return
    raise Conflict(ICANN_RULE, ["email_preferences[domain]: nobody else of the client receives domain emails"])


def _other_than(column: str, value: int | None) -> tuple[str, tuple[int, ...]]:
    """The clause (and its parameter) that leaves out the row whose `column` is `value`; none for None. (`IS NOT ?`
    is SQLite's alone, and `IS DISTINCT FROM` needs SQLite 3.39.)"""
    return ("", ()) if value is None else (f" AND {column} != ?", (value,))


def _accounts_free(conn: Connection, accounts: Sequence[str], client_id: int | None) -> None:
    taken = []
    for account in accounts:
        owner = client_of_account(conn, account)
        if owner is not None and owner != client_id:
            taken.append(f"accounts: {account} already belongs to client {owner}")
    if taken:
        raise Conflict("Account already belongs to another client", taken)


def _set_accounts(conn: Connection, client_id: int, accounts: Sequence[str]) -> None:
    conn.execute("DELETE FROM client_accounts WHERE client_id = ?", (client_id,))
    conn.executemany(
        "INSERT INTO client_accounts (account, client_id) VALUES (?, ?)", [(a, client_id) for a in accounts]
    )


# -- store functions: clients ------------------------------------------------------------------------------------


def insert_client(conn: Connection, fields: Mapping[str, Any]) -> Client:
    """Create a client from validated fields (`email` required; `id` optional)."""
    one_writer_at_a_time(conn, CONTACTS_WRITES)
    client_id = fields.get("id")
    if client_id is not None and read_client(conn, client_id) is not None:
        raise Conflict("Client ID already exists", [f"id: client {client_id} already exists"])
    _client_email_clash(conn, fields["email"], client_id=None)
    accounts = fields.get("accounts", ())
    _accounts_free(conn, accounts, None)
    prefs = {**CLIENT_DEFAULT_PREFERENCES, **fields.get("email_preferences", {})}
    now = _now()
    if client_id is None:
        # The next id as SQLite gives a rowid (one more than the largest), on both engines: ids are often given
        # (WHMCS's own), which an identity column's sequence would not know of.
        client_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM clients").fetchone()[0]
    conn.execute(
        f"INSERT INTO clients (id, email, firstname, lastname, companyname, {', '.join(_FLAGS)}, created_at, "
        f"updated_at) VALUES (?, ?, ?, ?, ?, {', '.join('?' * len(_FLAGS))}, ?, ?)",
        (
            client_id,
            fields["email"],
            fields.get("firstname", ""),
            fields.get("lastname", ""),
            fields.get("companyname", ""),
            *(int(prefs[c]) for c in CATEGORIES),
            now,
            now,
        ),
    )
    _set_accounts(conn, client_id, accounts)
    return _require_client(conn, client_id)


def change_client(conn: Connection, client_id: int, fields: Mapping[str, Any]) -> Client:
    """Change the given fields of a client; `accounts` replaces the list of accounts it owns."""
    one_writer_at_a_time(conn, CONTACTS_WRITES)
    client = _require_client(conn, client_id)
    if "email" in fields and fields["email"].lower() != client.email.lower():
        _client_email_clash(conn, fields["email"], client_id=client_id)
    prefs = {**client.email_preferences, **fields.get("email_preferences", {})}
    if client.email_preferences["domain"] and not prefs["domain"]:
        _domain_mail_kept(conn, client_id, without_contact=None, client_on=False)
    if "accounts" in fields:
        _accounts_free(conn, fields["accounts"], client_id)
        _set_accounts(conn, client_id, fields["accounts"])
    texts = {
        name: fields.get(name, getattr(client, name)) for name in ("email", "firstname", "lastname", "companyname")
    }
    conn.execute(
        f"UPDATE clients SET email = ?, firstname = ?, lastname = ?, companyname = ?, "
        f"{', '.join(f'{flag} = ?' for flag in _FLAGS)}, updated_at = ? WHERE id = ?",
        (*texts.values(), *(int(prefs[c]) for c in CATEGORIES), _now(), client_id),
    )
    return _require_client(conn, client_id)


# -- store functions: contacts -----------------------------------------------------------------------------------


def insert_contact(conn: Connection, client_id: int, fields: Mapping[str, Any]) -> Contact:
    """Add a contact to a client from validated fields (`password_hash` already made from `password2`).

    A contact given a password is a sub-account unless `subaccount` says otherwise, which is an error.
    """
    one_writer_at_a_time(conn, CONTACTS_WRITES)
    _require_client(conn, client_id)
    has_password = "password_hash" in fields
    subaccount = fields.get("subaccount", has_password)
    if has_password and not subaccount:
        raise InvalidInput(["password2: only a sub-account has a password (subaccount is off)"])
    email = fields.get("email", "")
    _contact_email_clash(conn, email, client_id=client_id, contact_id=None, subaccount=subaccount)
    prefs = {**CONTACT_DEFAULT_PREFERENCES, **fields.get("email_preferences", {})}
    now = _now()
    columns = ["client_id", *CONTACT_TEXT_FIELDS, "email", "country", "subaccount", "password_hash", "permissions",
               *_FLAGS, "created_at", "updated_at"]  # fmt: skip
    values = [
        client_id,
        *(fields.get(name, "") for name in CONTACT_TEXT_FIELDS),
        email,
        fields.get("country", ""),
        int(subaccount),
        fields.get("password_hash"),
        ",".join(fields.get("permissions", ())),
        *(int(prefs[c]) for c in CATEGORIES),
        now,
        now,
    ]
    cursor = conn.execute(
        f"INSERT INTO client_contacts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) RETURNING id",
        values,
    )
    return _require_contact(conn, int(cursor.fetchall()[0][0]))


def change_contact(conn: Connection, contact_id: int, fields: Mapping[str, Any]) -> Contact:
    """Change the given fields of a contact. Turning `subaccount` off forgets its password."""
    one_writer_at_a_time(conn, CONTACTS_WRITES)
    contact = _require_contact(conn, contact_id)
    subaccount = fields.get("subaccount", contact.subaccount)
    if "password_hash" in fields and not subaccount:
        raise InvalidInput(["password2: only a sub-account has a password (subaccount is off)"])
    email = fields.get("email", contact.email)
    if email.lower() != contact.email.lower() or subaccount != contact.subaccount:
        _contact_email_clash(conn, email, client_id=contact.client_id, contact_id=contact_id, subaccount=subaccount)
    prefs = {**contact.email_preferences, **fields.get("email_preferences", {})}
    if contact.email_preferences["domain"] and not prefs["domain"]:
        client = _require_client(conn, contact.client_id)
        _domain_mail_kept(
            conn, contact.client_id, without_contact=contact_id, client_on=client.email_preferences["domain"]
        )
    settable = (*CONTACT_TEXT_FIELDS, "email", "country")
    assignments: dict[str, Any] = {name: fields[name] for name in settable if name in fields}
    assignments["subaccount"] = int(subaccount)
    if "password_hash" in fields:
        assignments["password_hash"] = fields["password_hash"]
    elif not subaccount:
        assignments["password_hash"] = None
    if "permissions" in fields:
        assignments["permissions"] = ",".join(fields["permissions"])
    assignments.update({FLAG_OF[c]: int(prefs[c]) for c in CATEGORIES})
    assignments["updated_at"] = _now()
    conn.execute(
        f"UPDATE client_contacts SET {', '.join(f'{name} = ?' for name in assignments)} WHERE id = ?",
        (*assignments.values(), contact_id),
    )
    return _require_contact(conn, contact_id)


def remove_contact(conn: Connection, contact_id: int) -> Contact:
    """Delete a contact, unless it is the client's last receiver of domain emails (ICANN)."""
    contact = _require_contact(conn, contact_id)
    if contact.email_preferences["domain"]:
        client = _require_client(conn, contact.client_id)
        _domain_mail_kept(
            conn, contact.client_id, without_contact=contact_id, client_on=client.email_preferences["domain"]
        )
    conn.execute("DELETE FROM client_contacts WHERE id = ?", (contact_id,))
    return contact


def query_contacts(
    conn: Connection, filters: Mapping[str, Any], offset: int, limit: int | None
) -> tuple[int, list[Contact]]:
    """Contacts matching every filter (`client_id` and `FILTER_FIELDS`), by id: (total matching, the page)."""
    clauses, params = [], []
    for name, value in filters.items():
        if name == "client_id":
            clauses.append("client_id = ?")
        elif name in ("email", "country"):
            clauses.append(f"lower({name}) = lower(?)")
        elif name == "subaccount":
            value = int(value)
            clauses.append("subaccount = ?")
        elif name in FILTER_FIELDS:
            clauses.append(f"{name} = ?")
        else:
            raise InvalidInput([f"{name}: cannot filter on this field"])
        params.append(value)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    total = conn.execute(f"SELECT count(*) FROM client_contacts {where}", params).fetchone()[0]
    sql, _ = _select_contacts(where, (), "ORDER BY id LIMIT ? OFFSET ?")
    # No limit is the largest one: PostgreSQL refuses SQLite's -1, and SQLite has no LIMIT ALL.
    rows = conn.execute(sql, [*params, sys.maxsize if limit is None else limit, offset]).fetchall()
    return total, [_contact_from_row(row) for row in rows]


def client_and_contacts(conn: Connection, client_id: int) -> tuple[Client, list[Contact]] | None:
    client = read_client(conn, client_id)
    return None if client is None else (client, contacts_of(conn, client_id))


# -- async API ---------------------------------------------------------------------------------------------------


async def _logged(store: Store, action: str, fn: Callable[[Connection], T], **context: Any) -> T:
    result = await store.run(fn)
    log.info(action, **context)
    return result


async def create_client(store: Store, fields: Mapping[str, Any]) -> Client:
    """Create a client from validated fields (see `model.validate_client_fields`)."""
    client = await store.run(lambda conn: insert_client(conn, fields))
    log.info("client_created", client_id=client.id, accounts=list(client.accounts))
    return client


async def get_client(store: Store, client_id: int) -> Client:
    """The client, or `NotFound("Client ID Not Found")`."""
    return await store.run(lambda conn: _require_client(conn, client_id))


async def update_client(store: Store, client_id: int, fields: Mapping[str, Any]) -> Client:
    return await _logged(
        store, "client_updated", lambda conn: change_client(conn, client_id, fields), client_id=client_id,
        fields=sorted(fields),
    )  # fmt: skip


async def list_client_contacts(store: Store, client_id: int) -> list[Contact]:
    """A client's contacts by id, or `NotFound("Client ID Not Found")`."""

    def query(conn: Connection) -> list[Contact]:
        _require_client(conn, client_id)
        return contacts_of(conn, client_id)

    return await store.run(query)


async def add_contact(store: Store, client_id: int, fields: Mapping[str, Any]) -> Contact:
    """Add a contact from validated fields (see `model.validate_contact_fields`); `password2` is hashed here."""
    clean = await _with_password_hashed(fields)
    contact = await store.run(lambda conn: insert_contact(conn, client_id, clean))
    log.info("contact_added", client_id=client_id, contact_id=contact.id)
    return contact


async def get_contact(store: Store, contact_id: int) -> Contact:
    """The contact, or `NotFound("Contact ID Not Found")`."""
    return await store.run(lambda conn: _require_contact(conn, contact_id))


async def update_contact(store: Store, contact_id: int, fields: Mapping[str, Any]) -> Contact:
    """Change a contact's given fields (validated); `password2` is hashed here."""
    clean = await _with_password_hashed(fields)
    return await _logged(
        store, "contact_updated", lambda conn: change_contact(conn, contact_id, clean), contact_id=contact_id,
        fields=sorted(fields),
    )  # fmt: skip


async def delete_contact(store: Store, contact_id: int) -> Contact:
    """Delete a contact; returns what it was."""
    return await _logged(store, "contact_deleted", lambda conn: remove_contact(conn, contact_id), contact_id=contact_id)


async def find_contacts(
    store: Store, filters: Mapping[str, Any], offset: int = 0, limit: int | None = None
) -> tuple[int, list[Contact]]:
    """(total matching, the page of contacts from `offset`, at most `limit`)."""
    return await store.run(lambda conn: query_contacts(conn, filters, offset, limit))
