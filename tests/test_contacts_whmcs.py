"""The WHMCS dialect: `/includes/api.php` AddContact, UpdateContact, GetContacts, DeleteContact (seeds 002, 003)."""

from __future__ import annotations

from typing import Any

from dispatcher.contacts.clients import verify_password

from . import contacts_harness
from .contacts_harness import ContactsApi
from .seeds import whmcs_errors

contacts_api = contacts_harness.contacts_api  # the fixture, shared with the other contacts tests


async def make_client(api: ContactsApi, email: str = "owner@example.com", **fields: Any) -> int:
    status, body = await api.call("POST", "/api/v1/clients", json={"email": email, **fields})
    assert status == 201, body
    return body["id"]


async def contact_rows(api: ContactsApi) -> list[tuple[Any, ...]]:
    return await api.store.run(lambda conn: conn.execute("SELECT * FROM client_contacts ORDER BY id").fetchall())


async def test_add_contact_answers_success_with_the_new_contactid(contacts_api: ContactsApi) -> None:
    """The seed's AddContact example (clientid, firstname, lastname, email, plus WHMCS's own auth and
    responsetype parameters) answers exactly `{"result": "success", "contactid": N}`."""
    client_id = await make_client(contacts_api)
    body = await contacts_api.whmcs(
        action="AddContact", username="IDENTIFIER_OR_ADMIN_USERNAME", password="SECRET_OR_HASHED_PASSWORD",
        clientid=client_id, firstname="Jane", lastname="Doe", email="jane@example.com", responsetype="json",
    )  # fmt: skip
    assert set(body) == {"result", "contactid"}
    assert body["result"] == "success" and isinstance(body["contactid"], int)
    listed = await contacts_api.whmcs(action="GetContacts", clientid=client_id)
    (contact,) = listed["contacts"]["contact"]
    assert (contact["id"], contact["userid"], contact["firstname"], contact["lastname"], contact["email"]) == (
        body["contactid"],
        client_id,
        "Jane",
        "Doe",
        "jane@example.com",
    )


async def test_add_contact_errors_are_the_seed_messages(contacts_api: ContactsApi) -> None:
    """AddContact's two documented errors, word for word: an unknown or missing client, a duplicate address."""
    client_not_found, duplicate = whmcs_errors("AddContact")
    assert await contacts_api.whmcs(action="AddContact", clientid=999, email="a@example.com") == {
        "result": "error", "message": client_not_found,
    }  # fmt: skip
    assert await contacts_api.whmcs(action="AddContact", email="a@example.com") == {
        "result": "error", "message": client_not_found,
    }  # fmt: skip
    client_id = await make_client(contacts_api)
    await contacts_api.whmcs(action="AddContact", clientid=client_id, email="jane@example.com")
    for clash in ("jane@example.com", "JANE@example.com", "owner@example.com"):
        assert await contacts_api.whmcs(action="AddContact", clientid=client_id, email=clash) == {
            "result": "error", "message": duplicate,
        }, clash  # fmt: skip
    assert len(await contact_rows(contacts_api)) == 1


async def test_update_contact_errors_are_the_seed_messages(contacts_api: ContactsApi) -> None:
    """UpdateContact's three documented errors, word for word, and each refusal changes nothing."""
    not_found, duplicate, icann = whmcs_errors("UpdateContact")
    client_id = await make_client(contacts_api, email_preferences={"domain": False})
    first = await contacts_api.whmcs(
        action="AddContact", clientid=client_id, email="a@example.com", **{"email_preferences[domain]": 1}
    )
    second = await contacts_api.whmcs(action="AddContact", clientid=client_id, email="b@example.com")
    before = await contact_rows(contacts_api)

    assert await contacts_api.whmcs(action="UpdateContact", contactid=9999, firstname="X") == {
        "result": "error", "message": not_found,
    }  # fmt: skip
    assert await contacts_api.whmcs(
        action="UpdateContact", contactid=second["contactid"], email="a@example.com", firstname="Changed"
    ) == {"result": "error", "message": duplicate}
    assert await contacts_api.whmcs(
        action="UpdateContact", contactid=first["contactid"], firstname="Changed",
        **{"email_preferences[domain]": 0},
    ) == {"result": "error", "message": icann}  # fmt: skip
    assert await contact_rows(contacts_api) == before


async def test_icann_rule_allows_turning_domain_off_when_someone_else_keeps_it(contacts_api: ContactsApi) -> None:
    """Domain emails may be turned off for a contact while the client, or another contact, still gets them."""
    client_id = await make_client(contacts_api)  # the client receives domain emails (default)
    contact = await contacts_api.whmcs(action="AddContact", clientid=client_id, domainemails=1, email="a@example.com")
    body = await contacts_api.whmcs(
        action="UpdateContact", contactid=contact["contactid"], **{"email_preferences[domain]": "0"}
    )
    assert body == {"result": "success", "contactid": contact["contactid"]}

    other = await make_client(contacts_api, "other@example.com", email_preferences={"domain": False})
    one = await contacts_api.whmcs(action="AddContact", clientid=other, domainemails=1, email="one@example.com")
    two = await contacts_api.whmcs(action="AddContact", clientid=other, domainemails=1, email="two@example.com")
    assert (await contacts_api.whmcs(action="UpdateContact", contactid=one["contactid"], domainemails=0))[
        "result"
    ] == "success"
    refused = await contacts_api.whmcs(action="UpdateContact", contactid=two["contactid"], domainemails=0)
    assert refused["result"] == "error" and "ICANN" in refused["message"]


async def test_delete_contact_and_the_icann_rule(contacts_api: ContactsApi) -> None:
    """DeleteContact removes a contact (`{"result": "success", "contactid": N}`), refuses an unknown id with
    "Contact ID Not Found", and refuses to delete the client's last receiver of domain emails."""
    not_found, _, icann = whmcs_errors("UpdateContact")
    client_id = await make_client(contacts_api, email_preferences={"domain": False})
    keeper = await contacts_api.whmcs(action="AddContact", clientid=client_id, domainemails=1, email="k@example.com")
    plain = await contacts_api.whmcs(action="AddContact", clientid=client_id, email="p@example.com")

    assert await contacts_api.whmcs(action="DeleteContact", contactid=plain["contactid"]) == {
        "result": "success", "contactid": plain["contactid"],
    }  # fmt: skip
    assert await contacts_api.whmcs(action="DeleteContact", contactid=keeper["contactid"]) == {
        "result": "error", "message": icann,
    }  # fmt: skip
    assert await contacts_api.whmcs(action="DeleteContact", contactid=plain["contactid"]) == {
        "result": "error", "message": not_found,
    }  # fmt: skip
    assert len(await contact_rows(contacts_api)) == 1


async def test_get_contacts_filters_pages_and_flat_flags(contacts_api: ContactsApi) -> None:
    """GetContacts filters by client (`clientid` or its other name `userid`) and fields, pages with `limitstart`
    and `limitnum`, counts with `totalresults` and `numreturned`, and gives the flat `generalemails`… flags."""
    first = await make_client(contacts_api, "first@example.com")
    second = await make_client(contacts_api, "second@example.com")
    for n in range(5):
        await contacts_api.whmcs(
            action="AddContact", clientid=first, email=f"c{n}@example.com", firstname="Ann" if n % 2 else "Bo",
            country="de", generalemails=1, **{"email_preferences[invoice]": n % 2},
        )  # fmt: skip
    await contacts_api.whmcs(action="AddContact", clientid=second, email="x@example.com", firstname="Ann")

    everything = await contacts_api.whmcs(action="GetContacts")
    assert (everything["totalresults"], everything["numreturned"], everything["startnumber"]) == (6, 6, 0)

    page = await contacts_api.whmcs(action="GetContacts", userid=first, limitstart=1, limitnum=2)
    assert set(page) == {"result", "totalresults", "startnumber", "numreturned", "contacts"}
    assert (page["result"], page["totalresults"], page["startnumber"], page["numreturned"]) == ("success", 5, 1, 2)
    emails = [c["email"] for c in page["contacts"]["contact"]]
    assert emails == ["c1@example.com", "c2@example.com"]

    anns = await contacts_api.whmcs(action="GetContacts", clientid=first, firstname="Ann")
    assert [c["email"] for c in anns["contacts"]["contact"]] == ["c1@example.com", "c3@example.com"]
    by_email = await contacts_api.whmcs(action="GetContacts", email="X@EXAMPLE.COM")
    assert [c["userid"] for c in by_email["contacts"]["contact"]] == [second]

    contact = anns["contacts"]["contact"][0]
    flags = {k: contact[k] for k in ("generalemails", "productemails", "domainemails", "invoiceemails",
                                     "supportemails", "affiliateemails")}  # fmt: skip
    assert flags == {"generalemails": 1, "productemails": 0, "domainemails": 0, "invoiceemails": 1,
                     "supportemails": 0, "affiliateemails": 0}  # fmt: skip
    assert contact["country"] == "DE"
    assert "email_preferences" not in contact and "password" not in contact and "password2" not in contact

    none = await contacts_api.whmcs(action="GetContacts", clientid=4242)
    assert (none["totalresults"], none["numreturned"], none["contacts"]) == (0, 0, {"contact": []})
    bad = await contacts_api.whmcs(action="GetContacts", limitnum="many")
    assert bad["result"] == "error" and "limitnum" in bad["message"]


async def test_email_preferences_in_both_spellings_and_json_bodies(contacts_api: ContactsApi) -> None:
    """`email_preferences[x]=1` and the flat `xemails=1` are both accepted, in a form or a JSON body (where
    `email_preferences` may also be an object); given both ways they must agree."""
    client_id = await make_client(contacts_api)
    status, added = await contacts_api.call(
        "POST", "/includes/api.php",
        json={"action": "AddContact", "clientid": client_id, "email": "j@example.com",
              "email_preferences": {"product": True}, "supportemails": 1},
    )  # fmt: skip
    assert status == 200 and added["result"] == "success"
    status, updated = await contacts_api.call(
        "POST", "/includes/api.php",
        json={"action": "UpdateContact", "contactid": added["contactid"], "email_preferences[affiliate]": "1"},
    )  # fmt: skip
    assert updated == {"result": "success", "contactid": added["contactid"]}
    listed = await contacts_api.whmcs(action="GetContacts", clientid=client_id)
    contact = listed["contacts"]["contact"][0]
    assert (contact["productemails"], contact["supportemails"], contact["affiliateemails"]) == (1, 1, 1)
    assert contact["generalemails"] == 0

    clash = await contacts_api.whmcs(
        action="AddContact", clientid=client_id, email="k@example.com", domainemails=1,
        **{"email_preferences[domain]": 0},
    )  # fmt: skip
    assert clash["result"] == "error" and "domainemails" in clash["message"]
    status, broken = await contacts_api.call(
        "POST", "/includes/api.php", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 200 and broken["result"] == "error" and "JSON" in broken["message"]


async def test_sub_account_password_is_kept_only_as_a_slow_salted_hash(contacts_api: ContactsApi) -> None:
    """`password2` makes the contact a sub-account; it is stored as a salted scrypt hash that verifies, never
    in clear, and never returned; permissions are kept in the documented order."""
    client_id = await make_client(contacts_api)
    added = await contacts_api.whmcs(
        action="AddContact", clientid=client_id, email="sub@example.com", password2="s3cret-Passw0rd",
        permissions="managedomains,profile,manageproducts",
    )  # fmt: skip
    assert added["result"] == "success"
    row = await contacts_api.store.run(
        lambda conn: conn.execute("SELECT subaccount, password_hash, permissions FROM client_contacts").fetchone()
    )
    subaccount, password_hash, permissions = row
    assert subaccount == 1 and password_hash.startswith("scrypt$")
    assert "s3cret-Passw0rd" not in password_hash
    assert verify_password("s3cret-Passw0rd", password_hash) and not verify_password("wrong", password_hash)
    assert permissions == "profile,manageproducts,managedomains"

    again = await contacts_api.whmcs(action="AddContact", clientid=client_id, email="sub2@example.com", password2="x")
    other_hash = await contacts_api.store.run(
        lambda conn: conn.execute("SELECT password_hash FROM client_contacts WHERE id = ?", (again["contactid"],))
        .fetchone()[0]
    )  # fmt: skip
    assert other_hash.split("$")[4] != password_hash.split("$")[4]  # a salt of its own

    _, raw = await contacts_api.call("GET", f"/api/v1/contacts/{added['contactid']}")
    assert raw["password_set"] is True and "password2" not in raw and "password_hash" not in raw
    listed = await contacts_api.whmcs(action="GetContacts", subaccount=1)
    assert listed["totalresults"] == 2
    assert "scrypt" not in str(listed) and "s3cret" not in str(listed)

    # A sub-account's address is a login: no other client or sub-account may use it.
    other = await make_client(contacts_api, "other@example.com")
    dup = await contacts_api.whmcs(action="AddContact", clientid=other, email="SUB@example.com", password2="y")
    assert dup == {"result": "error", "message": "Duplicate Email Address"}


async def test_bad_fields_are_refused_and_nothing_is_half_written(contacts_api: ContactsApi) -> None:
    """A bad country, permission or boolean refuses the whole call, naming the field; an update with one bad
    field among good ones leaves the contact exactly as it was; an unknown action is "Command Not Found"."""
    client_id = await make_client(contacts_api)
    added = await contacts_api.whmcs(action="AddContact", clientid=client_id, email="a@example.com", firstname="A")
    before = await contact_rows(contacts_api)
    cases = [
        ({"country": "XX"}, "country"),
        ({"country": "GBR"}, "country"),
        ({"permissions": "profile,root"}, "permissions"),
        ({"generalemails": "perhaps"}, "general"),
        ({"email": "no-at-sign"}, "email"),
        ({"phonenumber": "call me"}, "phonenumber"),
        ({"email_preferences[spam]": "1"}, "spam"),
    ]
    for fields, word in cases:
        for action, key in (("AddContact", "clientid"), ("UpdateContact", "contactid")):
            ident = client_id if key == "clientid" else added["contactid"]
            body = await contacts_api.whmcs(action=action, firstname="Changed", **{key: ident}, **fields)
            assert body["result"] == "error" and word in body["message"], (action, fields, body)
            assert set(body) == {"result", "message"}
    assert await contact_rows(contacts_api) == before
    assert await contacts_api.whmcs(action="FlyToTheMoon") == {"result": "error", "message": "Command Not Found"}
    assert await contacts_api.whmcs() == {"result": "error", "message": "Command Not Found"}


async def test_route_needs_the_bearer_token(contacts_api: ContactsApi) -> None:
    """Without the bearer token `/includes/api.php` answers 401 and changes nothing."""
    client_id = await make_client(contacts_api)
    status, _ = await contacts_api.call(
        "POST", "/includes/api.php", auth=False, data={"action": "AddContact", "clientid": str(client_id)}
    )
    assert status == 401
    status, _ = await contacts_api.call("GET", "/includes/api.php", auth=False, params={"action": "GetContacts"})
    assert status == 401
    assert await contact_rows(contacts_api) == []


async def test_icann_rule_needs_an_address_to_receive_domain_mail(contacts_api: ContactsApi) -> None:
    """A contact with domain emails on but no email address receives nothing, so it does not satisfy the rule."""
    client_id = await make_client(contacts_api, email_preferences={"domain": False})
    await contacts_api.whmcs(action="AddContact", clientid=client_id, domainemails=1, firstname="No Address")
    only = await contacts_api.whmcs(action="AddContact", clientid=client_id, domainemails=1, email="o@example.com")
    refused = await contacts_api.whmcs(action="UpdateContact", contactid=only["contactid"], domainemails=0)
    assert refused == {"result": "error", "message": whmcs_errors("UpdateContact")[2]}
