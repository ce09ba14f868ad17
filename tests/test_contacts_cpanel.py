"""The cPanel dialect: `/json-api/cpanel` `CustInfo::savecontactinfo` and `displaycontactinfo` (seed 000)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from dispatcher.contacts.model import ACCOUNT_FIELDS, TOKEN_MASK

from . import contacts_harness, seeds
from .contacts_harness import AUTH, ContactsApi

contacts_api = contacts_harness.contacts_api  # the fixture, shared with the other contacts tests

SEED_TOKEN = "a1b2c3d4e5f6g7h8i9j0"


def seed_query() -> list[tuple[str, str]]:
    """The parameters of the seed's WHM API (JSON) example URL."""
    url = seeds.savecontactinfo()["example_call"]
    assert url.startswith("https://hostname.example.com:2087/"), "the seed's example URL"
    # The session part (`cpsess##########`) holds `#`, which would start a fragment: take the query by hand.
    return parse_qsl(url.partition("?")[2], keep_blank_values=True)


async def test_savecontactinfo_answers_the_seed_output_field_by_field(contacts_api: ContactsApi) -> None:
    """The seed's own example call gets the seed's `cpanelresult`: same envelope, and for every item of the
    example the same name, value, display value and description; only the token's value is masked."""
    status, body = await contacts_api.call("GET", "/json-api/cpanel", params=seed_query())
    assert status == 200
    expected = seeds.savecontactinfo()["example_output"]["cpanelresult"]
    result = body["cpanelresult"]
    assert set(result) == set(expected)
    assert {k: result[k] for k in ("apiversion", "func", "module", "event")} == {
        k: expected[k] for k in ("apiversion", "func", "module", "event")
    }
    items = {item["name"]: item for item in result["data"]}
    for item in result["data"]:
        assert set(item) == {"name", "value", "display_value", "descp"}
    for seed_item in expected["data"]:
        item = items[seed_item["name"]]
        assert item["descp"] == seed_item["descp"], seed_item["name"]
        if seed_item["name"] == "pushbullet_access_token":
            assert item["value"] == item["display_value"] == TOKEN_MASK
        elif isinstance(seed_item["value"], int):
            # The seed shows "off" beside value 1 for the AutoSSL items; the value is what was saved (1), and
            # display_value is its "on"/"off" form.
            assert item["value"] == seed_item["value"] == 1
            assert item["display_value"] == "on"
        else:
            assert item["value"] == seed_item["value"]
            assert item["display_value"] == seed_item["display_value"]
    # The seed's example output leaves out the two-factor pair that its parameter table documents.
    assert set(items) == {spec.name for spec in ACCOUNT_FIELDS}
    assert set(items) - {i["name"] for i in expected["data"]} == {
        "notify_twofactorauth_change",
        "notify_twofactorauth_change_notification_disabled",
    }
    # The order of the example is kept.
    seed_order = [i["name"] for i in expected["data"]]
    assert [name for name in items if name in seed_order] == seed_order


async def test_displaycontactinfo_lists_documented_defaults_for_a_new_account(contacts_api: ContactsApi) -> None:
    """An account never saved has every documented default: empty strings, every notify_* key on (1, "on")."""
    result = await contacts_api.cpanel("displaycontactinfo", username="newbie")
    assert result["event"] == {"result": 1}
    assert result["func"] == "displaycontactinfo"
    for item in result["data"]:
        spec = next(s for s in ACCOUNT_FIELDS if s.name == item["name"])
        if spec.kind == "boolean":
            assert (item["value"], item["display_value"]) == (1, "on")
        else:
            assert (item["value"], item["display_value"]) == ("", "")
        assert item["descp"] == spec.descp


async def test_post_form_body_with_jsonapi_keys_in_query(contacts_api: ContactsApi) -> None:
    """A POST carries the fields in a form body and the `cpanel_jsonapi_*` keys in the query string;
    fields not given keep their value, and displaycontactinfo reads back the same list."""
    await contacts_api.cpanel("savecontactinfo", username="bob", email="bob@example.com")
    result = await contacts_api.cpanel(
        "savecontactinfo",
        method="POST",
        form={"username": "bob", "notify_disk_limit": "0", "second_email": "bob2@example.net"},
    )
    assert result["event"] == {"result": 1}
    items = {item["name"]: item for item in result["data"]}
    assert items["email"]["value"] == "bob@example.com"
    assert items["second_email"]["value"] == "bob2@example.net"
    assert (items["notify_disk_limit"]["value"], items["notify_disk_limit"]["display_value"]) == (0, "off")
    assert items["notify_bandwidth_limit"]["value"] == 1
    shown = await contacts_api.cpanel("displaycontactinfo", username="bob")
    assert shown["data"] == result["data"]


async def test_account_may_be_given_as_cpanel_jsonapi_user(contacts_api: ContactsApi) -> None:
    """WHM names the account `cpanel_jsonapi_user`; that works as well as `username`."""
    await contacts_api.cpanel("savecontactinfo", cpanel_jsonapi_user="carol", email="carol@example.com")
    result = await contacts_api.cpanel("displaycontactinfo", username="carol")
    assert {i["name"]: i["value"] for i in result["data"]}["email"] == "carol@example.com"


async def test_token_never_appears_in_answers(contacts_api: ContactsApi) -> None:
    """The Pushbullet token is listed masked, in the save answer and in display, and sending back the mask
    keeps the stored token."""
    async with contacts_api.client.get(
        "/json-api/cpanel",
        params={
            "cpanel_jsonapi_apiversion": "2",
            "cpanel_jsonapi_module": "CustInfo",
            "cpanel_jsonapi_func": "savecontactinfo",
            "username": "bob",
            "pushbullet_access_token": SEED_TOKEN,
        },
        headers=AUTH,
    ) as response:
        raw = await response.text()
    assert SEED_TOKEN not in raw
    await contacts_api.cpanel("savecontactinfo", username="bob", pushbullet_access_token=TOKEN_MASK)
    _, body = await contacts_api.call("GET", "/api/v1/accounts/bob/contact-info")
    assert body["pushbullet_access_token"] == TOKEN_MASK
    stored = await contacts_api.store.run(
        lambda conn: conn.execute("SELECT pushbullet_access_token FROM account_contacts WHERE account='bob'").fetchone()
    )
    assert stored == (SEED_TOKEN,)


async def test_failure_is_http_200_with_result_0_and_reason_and_changes_nothing(contacts_api: ContactsApi) -> None:
    """A bad value fails the whole call: HTTP 200, `event.result` 0, a `reason` naming the field, nothing saved."""
    await contacts_api.cpanel("savecontactinfo", username="bob", email="bob@example.com", notify_disk_limit="1")
    raised = len(contacts_api.daemon.events)
    result = await contacts_api.cpanel("savecontactinfo", username="bob", email="not an address", notify_disk_limit="0")
    assert result["event"]["result"] == 0
    assert "email" in result["event"]["reason"]
    assert set(result) == {"apiversion", "func", "event", "module", "data"}
    shown = {i["name"]: i["value"] for i in (await contacts_api.cpanel("displaycontactinfo", username="bob"))["data"]}
    assert shown["email"] == "bob@example.com"
    assert shown["notify_disk_limit"] == 1
    assert len(contacts_api.daemon.events) == raised


async def test_each_kind_of_bad_call_is_refused_with_a_reason(contacts_api: ContactsApi) -> None:
    """Bad booleans, unknown fields, bad tokens, a missing account, another module or function, another API
    version: each gets result 0 and a reason that says what is wrong."""
    cases = [
        ({"username": "bob", "notify_disk_limit": "maybe"}, "notify_disk_limit"),
        ({"username": "bob", "notify_disk_limt": "1"}, "notify_disk_limt"),
        ({"username": "bob", "pushbullet_access_token": "has spaces"}, "pushbullet_access_token"),
        ({"username": "bob", "second_email": "x@y"}, "second_email"),
        ({}, "username"),
        ({"username": "bad name"}, "account"),
    ]
    for params, word in cases:
        result = await contacts_api.cpanel("savecontactinfo", **params)
        assert result["event"]["result"] == 0, params
        assert word in result["event"]["reason"], (params, result["event"]["reason"])
    other = await contacts_api.cpanel("setcontactinfo", username="bob")
    assert other["event"]["result"] == 0 and "CustInfo::setcontactinfo" in other["event"]["reason"]
    status, body = await contacts_api.call(
        "GET",
        "/json-api/cpanel",
        params={"cpanel_jsonapi_apiversion": "1", "cpanel_jsonapi_module": "CustInfo",
                "cpanel_jsonapi_func": "savecontactinfo", "username": "bob"},
    )  # fmt: skip
    assert status == 200 and body["cpanelresult"]["event"]["result"] == 0
    assert "apiversion" in body["cpanelresult"]["event"]["reason"]


async def test_route_needs_the_bearer_token(contacts_api: ContactsApi) -> None:
    """Without the token, or with a wrong one, the cPanel route answers 401 and saves nothing."""
    params = {"cpanel_jsonapi_module": "CustInfo", "cpanel_jsonapi_func": "savecontactinfo", "username": "bob",
              "email": "bob@example.com"}  # fmt: skip
    for method in ("GET", "POST"):
        status, _ = await contacts_api.call(method, "/json-api/cpanel", auth=False, params=params)
        assert status == 401
        status, _ = await contacts_api.call(
            method, "/json-api/cpanel", auth=False, params=params, headers={"Authorization": "Bearer wrong"}
        )
        assert status == 401
    result = await contacts_api.cpanel("displaycontactinfo", username="bob")
    assert {i["name"]: i["value"] for i in result["data"]}["email"] == ""
