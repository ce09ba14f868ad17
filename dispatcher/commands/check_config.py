"""`dispatcher check-config -c FILE`: validate everything a reload would, print `FILE:LINE:COL: message` lines.

Warnings (`FILE:LINE:COL: warning: message`, e.g. an `importance:` key that matches no known type) are printed
too, and leave the exit status 0.

A valid file whose store is a PostgreSQL database (a cluster, SPEC §8a) is also compared with what the instances
running on that store use: each live instance (`cluster/membership.py`: a heartbeat within the lease and its
presence lock held) records its config's hash, and one whose hash differs from this file's gets a line
`FILE: warning: …` naming it (id, host, pid, config path). A store that cannot be reached, or a read that fails, is
a warning too (`FILE: warning: … could not be checked …`), never an error: the file itself is valid. The store is
opened read-only and shown as its engine shows it (no credentials; the config refuses a password in the URL); a
database in which no daemon has created its tables yet has nothing to compare. On SQLite there is one instance per
store file, and nothing to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from ..cluster.membership import Instance, config_hash, live_instances
from ..config import Config, load_config, redact_url
from ..engines import engine_for, is_url
from ..errors import ConfigError
from ..store import Store, StoreNotCreated
from .common import SubParsers, add_config_option


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("check-config", help="validate the configuration and compile all templates")
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    warnings: tuple[str, ...] = ()
    try:
        config = load_config(args.config)
        warnings = config.warnings
        issues = check_templates(config)
    except ConfigError as err:
        issues = err.issues
    for line in (*issues, *warnings):
        print(line, file=sys.stderr)
    if issues:
        return 1
    for line in cluster_warnings(config, args.config):
        print(line, file=sys.stderr)
    print(f"{args.config}: OK")
    return 0


def check_templates(config: object) -> list[str]:
    """Compile every shipped and overriding template; one `FILE:LINE: message` line per broken one."""
    try:
        from ..render import check_templates as compile_all
    except ImportError:  # rendering not built yet
        return []
    from ..digests.render import check_digest_templates

    return compile_all(config) or check_digest_templates(config)  # type: ignore[arg-type]


# -- the instances sharing the store ------------------------------------------------------------------------------


def cluster_warnings(config: Config, file: str) -> list[str]:
    """`FILE: warning: …` lines for the live instances on the config's PostgreSQL store that run another
    configuration than `config` (its `config_hash`), or one line saying the store could not be checked. Empty on
    SQLite, for a store with no tables yet, and when every live instance agrees."""
    where = config.store.where
    if not is_url(where):
        return []
    url = str(where)
    shown = _shown(url)
    try:
        expected = config_hash(config)
        instances = asyncio.run(_live_instances(url))
    except Exception as err:  # unreachable, refused, a newer store, psycopg not installed: the file is still valid
        return [
            f"{file}: warning: the instances sharing the store {shown} could not be checked for a different"
            f" configuration: {' '.join(str(err).split()) or type(err).__name__}"  # one line (libpq's have two)
        ]
    if instances is None:  # no daemon has created its tables there yet
        return []
    return [
        f"{file}: warning: {_describe(instance)} on the store {shown} runs a different configuration (config hash"
        f" {instance.config_hash}, this file's {expected}): the running instances use another configuration than"
        " this file; reload or restart them with it, or this file differs from theirs"
        for instance in instances
        if instance.config_hash != expected
    ]


async def _live_instances(url: str) -> list[Instance] | None:
    """The live instances of the store at `url`, read through a read-only store; None when the database has no
    store in it yet."""
    store = Store(url, readonly=True)
    engine = store.engine
    try:
        await store.open()
    except StoreNotCreated:
        return None
    try:

        def read(conn: Any) -> list[Instance]:
            return live_instances(conn, time.time(), engine.present_instances(conn))

        return await store.run(read)
    finally:
        await store.close()


def _describe(instance: Instance) -> str:
    config_path = instance.config_path or "unknown"
    return f"instance {instance.id} (host {instance.host}, pid {instance.pid}, config {config_path})"


def _shown(url: str) -> str:
    """The store as messages show it (the engine's `shown`: no user, password or query), even when its engine cannot
    be loaded (psycopg not installed)."""
    try:
        return engine_for(url).shown
    except ImportError:
        return redact_url(url)
