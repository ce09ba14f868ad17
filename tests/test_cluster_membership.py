"""An instance in its store (`cluster/membership.py`), on the engine under test: its row and config hash, renewed at
a reload, given back at a clean stop; and claims left by an instance that is gone, taken over and reported."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dispatcher.cluster.claims import Claimant
from dispatcher.cluster.membership import config_hash, list_instances, register
from dispatcher.config import load_config
from dispatcher.outbox import NewDelivery, claim_due, record_plans
from dispatcher.store import insert_events

from .conftest import wait_until
from .test_digests import event


async def instances(daemon: Any) -> list[Any]:
    return await daemon.dispatcher.store.run(list_instances)


async def test_an_instance_records_its_config_hash_renews_it_at_a_reload_and_leaves_at_a_clean_stop(
    make_config: Callable[..., Path], start_daemon: Any
) -> None:
    """A running daemon has a row in `instances` with its config's hash (what `check-config` compares); after a
    reload that changes what instances must agree on, the row carries the new hash within a heartbeat; a clean
    stop removes the row."""
    path = make_config()
    daemon = await start_daemon(path)
    (row,) = await instances(daemon)
    assert row.config_hash == config_hash(load_config(path))
    assert row.config_path == str(path)

    changed = yaml.safe_load(path.read_text())
    changed["importance"] = {"Backup/*": "low"}
    path.write_text(yaml.safe_dump(changed))
    new_hash = config_hash(load_config(path))
    assert new_hash != row.config_hash
    assert await daemon.dispatcher.reload(path)

    async def renewed() -> bool:
        return [found.config_hash for found in await instances(daemon)] == [new_hash]

    await wait_until(renewed, timeout_s=10)
    store = daemon.dispatcher.store
    await daemon.stop()
    await store.open()
    try:
        assert await store.run(list_instances) == []
    finally:
        await store.close()


async def test_deliveries_claimed_by_a_gone_instance_are_taken_over_and_reported(
    make_config: Callable[..., Path], start_daemon: Any
) -> None:
    """A pending delivery claimed by an instance whose heartbeat stopped long ago (a machine lost) is free for the
    others: `claim_due` takes it and names the instance it took it from; one claimed by an instance alive is not."""
    daemon = await start_daemon(make_config(contacts={"root": {"email": ["admin@example.com"]}}))
    store = daemon.dispatcher.store
    now = time.time()

    def leave_claims(conn: Any) -> tuple[int, int]:
        gone = register(conn, host="lost", pid=1, config_hash="x", config_path=None, now=now - 3600)
        alive = register(conn, host="busy", pid=2, config_hash="x", config_path=None, now=now)
        store.engine.hold_presence(conn, alive)  # on PostgreSQL, alive is also present (here: on this connection)
        for event_id, instance in (("by-gone", gone), ("by-alive", alive)):
            recorded = event(event_id)
            insert_events(conn, [recorded], "http")
            row = NewDelivery(recorded, "high", "root", "system", "nowhere", "t", "t", "pending")
            record_plans(conn, [event_id], [row], now + 3600, claimed_by=instance)  # not due for the daemon yet
        return gone, alive

    daemon.dispatcher.membership.stop()  # the daemon's own claims stay out of this: no heartbeat to race with
    gone, alive = await store.run(leave_claims)
    await daemon.dispatcher.membership.beat()  # sees `gone`'s heartbeat an hour old
    assert daemon.dispatcher.membership.gone == frozenset({gone})

    claimant = Claimant(me=999, gone=daemon.dispatcher.membership.gone)
    claimed = await store.run(lambda conn: claim_due(conn, now + 7200, (), 10, claimant))
    assert [delivery.event_id for delivery, _ in claimed.deliveries] == ["by-gone"]
    assert [instance for _, instance in claimed.taken_over] == [gone]
    assert alive not in claimant.gone
