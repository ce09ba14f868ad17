-- A store as the first release (commit e4ff3df, schema version 1) left it: its CREATE statements, verbatim
-- (store.py EVENTS_SCHEMA, outbox.py SCHEMA, contacts/schema.py SCHEMA), no PRAGMA user_version, and a few rows:
-- an event delivered, an event recorded but not yet planned (the old daemon stopped before planning it), an
-- account's contact info, a client with an account and a contact. tests/test_migrations.py opens it with today's
-- daemon.

CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,   -- the idempotency key
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,          -- Event.to_json()
    source      TEXT NOT NULL,          -- mqtt | http | internal
    received_at TEXT NOT NULL,
    planned     INTEGER NOT NULL DEFAULT 0  -- 1 once its deliveries are in the outbox
);
CREATE INDEX IF NOT EXISTS events_unplanned ON events(seq) WHERE planned = 0;
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    importance      TEXT NOT NULL,
    recipient       TEXT NOT NULL,          -- "root", "account:bob", "contact:34"
    recipient_kind  TEXT NOT NULL,          -- system | account | client | contact
    channel         TEXT,                   -- NULL when a whole recipient is suppressed
    target          TEXT,                   -- the real address/token/URL, needed to resume; never shown
    target_label    TEXT,                   -- the channel's describe_target(): what logs and the API show
    status          TEXT NOT NULL,          -- pending | sent | failed | suppressed
    reason          TEXT,                   -- why suppressed, or the last error
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    next_attempt_at REAL,                   -- pending: when the next attempt is due
    sent_at         REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_once ON deliveries(event_id, channel, target) WHERE status != 'suppressed';
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_id);
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

INSERT INTO events (id, type, body, source, received_at, planned) VALUES
    ('v1-delivered', 'AutoSSL/CertificateInstalled',
     '{"id":"v1-delivered","type":"AutoSSL/CertificateInstalled","occurred_at":"2026-11-20T09:00:00Z","host":"server1.example.com","account":"bob","client_id":null,"data":{"domain":"bob.example.com"},"received_at":"2026-11-20T09:00:01.250000Z"}',
     'mqtt', '2026-11-20T09:00:01.250000+00:00', 1),
    ('v1-unplanned', 'Backup/Failure',
     '{"id":"v1-unplanned","type":"Backup/Failure","occurred_at":"2026-11-20T10:00:00Z","host":"server1.example.com","account":null,"client_id":null,"data":{"error":"No space left on device (/backup)"},"received_at":"2026-11-20T10:00:00Z"}',
     'http', '2026-11-20T10:00:00+00:00', 0);

INSERT INTO deliveries (event_id, event_type, importance, recipient, recipient_kind, channel, target, target_label,
                        status, reason, attempts, created_at, updated_at, next_attempt_at, sent_at) VALUES
    ('v1-delivered', 'AutoSSL/CertificateInstalled', 'low', 'root', 'system', 'email', 'admin@example.com',
     'admin@example.com', 'sent', NULL, 1, 1795165201.5, 1795165202.0, NULL, 1795165202.0),
    ('v1-delivered', 'AutoSSL/CertificateInstalled', 'low', 'account:bob', 'account', 'email', 'bob@example.com',
     'bob@example.com', 'sent', NULL, 1, 1795165201.5, 1795165202.0, NULL, 1795165202.0);

INSERT INTO account_contacts (account, email, second_email, pushbullet_access_token, preferences, updated_at) VALUES
    ('bob', 'bob@example.com', '', '', '{"notify_autossl_renewal": 1}', '2026-11-19T08:00:00+00:00');

INSERT INTO clients (id, email, firstname, lastname, created_at, updated_at) VALUES
    (12, 'billing@bob.example.com', 'Bob', 'Builder', '2026-11-19T08:00:00+00:00', '2026-11-19T08:00:00+00:00');
INSERT INTO client_accounts (account, client_id) VALUES ('bob', 12);
INSERT INTO client_contacts (client_id, firstname, email, domainemails, created_at, updated_at) VALUES
    (12, 'Wendy', 'wendy@bob.example.com', 1, '2026-11-19T08:00:00+00:00', '2026-11-19T08:00:00+00:00');
