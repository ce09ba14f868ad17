"""The digests' tables, created idempotently by the store (`Store(path, schemas=[..., SCHEMA])`) and by the
migration to schema version 3 (`migrations.py`). A module of its own that imports nothing, so that the migrations
can name it without importing the store.

A digest is one message to one (recipient, channel, target) for one group; its members are deliveries (rows of
`deliveries`, one per event) linked by `digest_members`. Its states:

    collecting  waiting for its due time; new events of the group join it
    sending     taken for an attempt (at start, one left so by a killed daemon is attempted again)
    retry       an attempt failed and the next is due at `due_at`; nothing joins it any more
    sent, failed, suppressed (nothing left to send: every member was suppressed meanwhile)
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key       TEXT NOT NULL,          -- the rule's position and the group's values, as JSON (grouping.py)
    recipient       TEXT NOT NULL,          -- as in deliveries: "root", "account:bob", "contact:34"
    recipient_kind  TEXT NOT NULL,
    channel         TEXT NOT NULL,
    target          TEXT NOT NULL,          -- the real address/token/URL; never shown
    target_label    TEXT NOT NULL,          -- the channel's describe_target()
    importance      TEXT NOT NULL,          -- the highest of its events'
    state           TEXT NOT NULL,          -- collecting | sending | retry | sent | failed | suppressed
    members         INTEGER NOT NULL DEFAULT 0,
    size_bytes      INTEGER NOT NULL DEFAULT 0,   -- its events' JSON, summed: bounds what one message carries
    attempts        INTEGER NOT NULL DEFAULT 0,
    retries         INTEGER NOT NULL DEFAULT 0,   -- how often it was put back by hand (`dispatcher retry`)
    attempts_before INTEGER NOT NULL DEFAULT 0,   -- its attempts by then: `max_attempts` counts the ones after
    reason          TEXT,                   -- the last error
    created_at      REAL NOT NULL,
    due_at          REAL NOT NULL,          -- collecting: when it goes; retry: its next attempt
    flushed_at      REAL,                   -- when first taken for sending: the group's interval counts from here
    budget_from     REAL,                   -- where `give_up_after_s` counts from (first taken, or put back by hand)
    sent_at         REAL,
    updated_at      REAL NOT NULL,
    claimed_by      INTEGER                 -- sending: the instance attempting it (cluster/claims.py)
);
CREATE INDEX IF NOT EXISTS digests_by_group ON digests(group_key, recipient, channel, target, id);
CREATE INDEX IF NOT EXISTS digests_waiting ON digests(due_at) WHERE state IN ('collecting', 'retry');
CREATE INDEX IF NOT EXISTS digests_by_time ON digests(updated_at);
CREATE TABLE IF NOT EXISTS digest_members (
    delivery_id     INTEGER PRIMARY KEY,    -- deliveries.id: a delivery is in one digest at most
    digest_id       INTEGER NOT NULL        -- digests.id
);
CREATE INDEX IF NOT EXISTS digest_members_by_digest ON digest_members(digest_id);
"""
