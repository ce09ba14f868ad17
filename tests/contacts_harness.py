"""A small harness for the contacts tests: a real store, the real routes and middleware, real HTTP on loopback.

The daemon is replaced by `StandIn`, which carries exactly what the contact routes use (`store`, `config`,
`accept`) and records the events it is given, so a test can see the notices a change raises. `accept` records
them in the store too, as the daemon does, so ids are checked the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dispatcher.config import Config, parse_config
from dispatcher.contacts import SCHEMA
from dispatcher.events import Event
from dispatcher.http.base import DISPATCHER
from dispatcher.http.server import require_token
from dispatcher.http.server import setup_contact_routes as setup_routes
from dispatcher.store import Store

TOKEN = "contacts-test-token-7d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class StandIn:
    """The parts of `Dispatcher` the contact routes use; `accepted` holds (event, source) in order."""

    store: Store
    config: Config
    accepted: list[tuple[Event, str]] = field(default_factory=list)

    async def accept(self, events: Sequence[Event], source: str) -> list[bool]:
        self.accepted.extend((event, source) for event in events)
        return await self.store.add_events(events, source)

    @property
    def events(self) -> list[Event]:
        return [event for event, _ in self.accepted]


@dataclass
class ContactsApi:
    """A running app with the contact routes, and a client that sends the bearer token unless told not to."""

    client: TestClient[Any, Any]
    daemon: StandIn

    @property
    def store(self) -> Store:
        return self.daemon.store

    async def call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> tuple[int, Any]:
        """(status, decoded JSON body or None) of one request."""
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            headers.update(AUTH)
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            raw = await response.read()
            body = json.loads(raw) if raw and response.content_type == "application/json" else None
            return response.status, body

    async def whmcs(self, **params: Any) -> dict[str, Any]:
        """One `/includes/api.php` form POST; WHMCS answers HTTP 200 whatever happens."""
        status, body = await self.call("POST", "/includes/api.php", data={k: str(v) for k, v in params.items()})
        assert status == 200, body
        return body

    async def cpanel(self, func: str, method: str = "GET", form: dict[str, str] | None = None, **params: str) -> Any:
        """One `/json-api/cpanel` call; cPanel answers HTTP 200 whatever happens."""
        query = {
            "cpanel_jsonapi_apiversion": "2",
            "cpanel_jsonapi_module": "CustInfo",
            "cpanel_jsonapi_func": func,
            **params,
        }
        status, body = await self.call(method, "/json-api/cpanel", params=query, data=form)
        assert status == 200, body
        return body["cpanelresult"]


def make_config(tmp_path: Path) -> Config:
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    return parse_config(
        "hostname: contacts.example.com\nhttp:\n  listen: 127.0.0.1:0\n  token_file: api.token\n",
        base_dir=tmp_path,
    )


@pytest.fixture
async def contacts_api(tmp_path: Path, store_where: Path | str) -> AsyncIterator[ContactsApi]:
    """The contact routes behind the real token middleware, on a fresh store, served on loopback."""
    store = Store(store_where, schemas=[SCHEMA])
    await store.open()
    daemon = StandIn(store=store, config=make_config(tmp_path))
    app = web.Application(middlewares=[require_token])
    app[DISPATCHER] = daemon  # type: ignore[assignment]  # a stand-in with the attributes the routes use
    setup_routes(app)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield ContactsApi(client=client, daemon=daemon)
    finally:
        await client.close()
        await store.close()


@pytest.fixture
async def store(store_where: Path | str) -> AsyncIterator[Store]:
    """A fresh store with the contact tables, on the engine under test."""
    store = Store(store_where, schemas=[SCHEMA])
    await store.open()
    try:
        yield store
    finally:
        await store.close()


__all__ = ["AUTH", "ContactsApi", "StandIn", "contacts_api", "store"]
