"""Contacts in the running daemon: changes made over its API reach real mailboxes (aiosmtpd) through the pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import RunningDaemon, settled
from .servers import SmtpSink


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as sink:
        yield sink


async def call(daemon: RunningDaemon, http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> Any:
    async with http.request(method, daemon.base_url + path, headers=daemon.auth, **kwargs) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


async def test_address_change_mails_old_and_new_addresses(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """Changing an account's address over the REST API sends the ContactInfo/Change notice to the new address
    and to the old one, by real SMTP, rendered with the shipped template."""
    channels = {"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}}
    daemon = await start_daemon(make_config(channels=channels))
    await call(daemon, http, "PUT", "/api/v1/accounts/bob/contact-info", json={"email": "old@example.com"})
    (first,) = await smtp.wait_for(1)
    assert first.rcpt_tos == ("old@example.com",)
    await call(daemon, http, "PUT", "/api/v1/accounts/bob/contact-info", json={"email": "new@example.com"})
    mails = await smtp.wait_for(3)
    notices = mails[1:]
    assert sorted(rcpt for mail in notices for rcpt in mail.rcpt_tos) == ["new@example.com", "old@example.com"]
    for mail in notices:
        assert mail.message["X-Dispatcher-Event-Type"] == "ContactInfo/Change"
    assert notices[0].message["X-Dispatcher-Event-Id"] == notices[1].message["X-Dispatcher-Event-Id"]


async def test_whmcs_contacts_receive_account_events_by_category(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """A client created over REST owning `bob`, a contact added over the WHMCS dialect with product emails on, and
    a Quota/DiskWarning event for `bob`: the account, the client and the contact each get one mail."""
    channels = {"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}}
    daemon = await start_daemon(make_config(channels=channels))
    await call(daemon, http, "POST", "/json-api/cpanel", params={
        "cpanel_jsonapi_apiversion": "2", "cpanel_jsonapi_module": "CustInfo", "cpanel_jsonapi_func": "savecontactinfo",
        "cpanel_jsonapi_user": "bob",
    }, data={"email": "bob@example.com"})  # fmt: skip
    (notice,) = await smtp.wait_for(1)  # the new address is told it is now the contact address
    assert notice.message["X-Dispatcher-Event-Type"] == "ContactInfo/Change"
    client = await call(
        daemon, http, "POST", "/api/v1/clients", json={"email": "owner@example.com", "accounts": ["bob"]}
    )
    added = await call(daemon, http, "POST", "/includes/api.php", data={
        "action": "AddContact", "clientid": str(client["id"]), "email": "billing@example.com", "productemails": "1",
    })  # fmt: skip
    assert added["result"] == "success"
    await call(daemon, http, "POST", "/includes/api.php", data={
        "action": "AddContact", "clientid": str(client["id"]), "email": "quiet@example.com",
    })  # fmt: skip
    await call(daemon, http, "POST", "/api/v1/events", json={"type": "Quota/DiskWarning", "account": "bob",
                                                            "data": {"user": "bob"}})  # fmt: skip
    mails = (await smtp.wait_for(4))[1:]
    assert sorted(rcpt for mail in mails for rcpt in mail.rcpt_tos) == [
        "billing@example.com", "bob@example.com", "owner@example.com",
    ]  # fmt: skip
    assert {mail.message["X-Dispatcher-Event-Type"] for mail in mails} == {"Quota/DiskWarning"}
    await settled(daemon)  # every delivery planned and finished: a mail to quiet@, which must not come, would be in
    assert len(smtp.messages) == 4
