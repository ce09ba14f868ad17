"""The contact tables, created idempotently by the store (`Store(path, schemas=[SCHEMA])`).

Columns follow the names users see: cPanel's `savecontactinfo` fields for accounts, WHMCS's `tblcontacts`
spelling for contacts (the flat `generalemails`… flags), so the dialects map one to one.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS account_contacts (
    account                 TEXT PRIMARY KEY,
    email                   TEXT NOT NULL DEFAULT '',
    second_email            TEXT NOT NULL DEFAULT '',
    pushbullet_access_token TEXT NOT NULL DEFAULT '',  -- a secret: never returned, never logged
    preferences             TEXT NOT NULL DEFAULT '{}',  -- JSON notify_* -> 0/1; absent keys take the default
    updated_at              TEXT NOT NULL
);

-- The addresses a ContactInfo/Change event may also reach (the account's previous addresses): recorded with
-- the change that raised it, so an event published by anyone else cannot direct mail to arbitrary addresses.
CREATE TABLE IF NOT EXISTS account_contact_notices (
    event_id   TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    addresses  TEXT NOT NULL,   -- JSON list
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS clients (
    id              INTEGER PRIMARY KEY,
    email           TEXT NOT NULL,
    firstname       TEXT NOT NULL DEFAULT '',
    lastname        TEXT NOT NULL DEFAULT '',
    companyname     TEXT NOT NULL DEFAULT '',
    generalemails   INTEGER NOT NULL DEFAULT 1,
    productemails   INTEGER NOT NULL DEFAULT 1,
    domainemails    INTEGER NOT NULL DEFAULT 1,
    invoiceemails   INTEGER NOT NULL DEFAULT 1,
    supportemails   INTEGER NOT NULL DEFAULT 1,
    affiliateemails INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS clients_email ON clients(email COLLATE NOCASE);

-- An account belongs to at most one client (SPEC §10).
CREATE TABLE IF NOT EXISTS client_accounts (
    account   TEXT PRIMARY KEY,
    client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS client_accounts_client ON client_accounts(client_id);

CREATE TABLE IF NOT EXISTS client_contacts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id       INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    firstname       TEXT NOT NULL DEFAULT '',
    lastname        TEXT NOT NULL DEFAULT '',
    companyname     TEXT NOT NULL DEFAULT '',
    email           TEXT NOT NULL DEFAULT '',
    address1        TEXT NOT NULL DEFAULT '',
    address2        TEXT NOT NULL DEFAULT '',
    city            TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL DEFAULT '',
    postcode        TEXT NOT NULL DEFAULT '',
    country         TEXT NOT NULL DEFAULT '',
    phonenumber     TEXT NOT NULL DEFAULT '',
    subaccount      INTEGER NOT NULL DEFAULT 0,
    password_hash   TEXT,            -- salted scrypt of password2; NULL when none; never returned
    permissions     TEXT NOT NULL DEFAULT '',  -- comma-separated, documented order
    generalemails   INTEGER NOT NULL DEFAULT 0,
    productemails   INTEGER NOT NULL DEFAULT 0,
    domainemails    INTEGER NOT NULL DEFAULT 0,
    invoiceemails   INTEGER NOT NULL DEFAULT 0,
    supportemails   INTEGER NOT NULL DEFAULT 0,
    affiliateemails INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS client_contacts_client ON client_contacts(client_id);
"""
