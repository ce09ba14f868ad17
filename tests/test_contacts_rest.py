"""The native REST API for account contact info, clients and contacts (SPEC §7)."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.contacts.model import ACCOUNT_FIELDS, ICANN_RULE, TOKEN_MASK

from . import contacts_harness
from .contacts_harness import ContactsApi

contacts_api = contacts_harness.contacts_api  # the fixture, shared with the other contacts tests

ROUTES = [
    ("GET", "/api/v1/accounts/bob/contact-info"),
    ("PUT", "/api/v1/accounts/bob/contact-info"),
    ("POST", "/api/v1/clients"),
    ("GET", "/api/v1/clients/1"),
    ("PATCH", "/api/v1/clients/1"),
    ("GET", "/api/v1/clients/1/contacts"),
    ("POST", "/api/v1/clients/1/contacts"),
    ("GET", "/api/v1/contacts/1"),
    ("PATCH", "/api/v1/contacts/1"),
    ("DELETE", "/api/v1/contacts/1"),
    ("GET", "/json-api/cpanel"),
    ("POST", "/json-api/cpanel"),
    ("GET", "/includes/api.php"),
    ("POST", "/includes/api.php"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_the_bearer_token(contacts_api: ContactsApi, method: str, path: str) -> None:
    """Each contacts route answers 401 with a JSON error, and a `WWW-Authenticate` challenge, without the token."""
    async with contacts_api.client.request(method, path, json={"email": "x@example.com"}) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in await response.json()
    async with contacts_api.client.request(method, path, headers={"Authorization": "Bearer nope"}) as response:
        assert response.status == 401


# -- account contact info ----------------------------------------------------------------------------------------


async def test_contact_info_defaults_then_partial_put(contacts_api: ContactsApi) -> None:
    """GET gives every savecontactinfo field with its documented default; PUT changes only the fields given."""
    status, body = await contacts_api.call("GET", "/api/v1/accounts/bob/contact-info")
    assert status == 200
    assert set(body) == {"account", *(spec.name for spec in ACCOUNT_FIELDS)}
    assert body["account"] == "bob" and body["email"] == "" and body["pushbullet_access_token"] == ""
    assert all(body[s.name] is True for s in ACCOUNT_FIELDS if s.kind == "boolean")

    status, body = await contacts_api.call(
        "PUT", "/api/v1/accounts/bob/contact-info",
        json={"email": "bob@example.com", "notify_disk_limit": False, "pushbullet_access_token": "o.AbC123"},
    )  # fmt: skip
    assert status == 200
    assert body["email"] == "bob@example.com" and body["notify_disk_limit"] is False
    assert body["pushbullet_access_token"] == TOKEN_MASK
    status, body = await contacts_api.call("PUT", "/api/v1/accounts/bob/contact-info", json={"second_email": "b@x.org"})
    assert (body["email"], body["second_email"], body["notify_disk_limit"]) == ("bob@example.com", "b@x.org", False)
    status, again = await contacts_api.call("GET", "/api/v1/accounts/bob/contact-info")
    assert again == body


async def test_contact_info_bad_input_is_422_naming_each_field_and_changes_nothing(contacts_api: ContactsApi) -> None:
    """A PUT with any bad field is refused whole with 422 and `details` naming every bad field; a body that is
    not a JSON object is 400; the stored settings stay as they were."""
    await contacts_api.call("PUT", "/api/v1/accounts/bob/contact-info", json={"email": "bob@example.com"})
    raised = len(contacts_api.daemon.events)
    status, body = await contacts_api.call(
        "PUT", "/api/v1/accounts/bob/contact-info",
        json={"email": "new@example.com", "second_email": "bad@", "notify_ssl_expiry": "sometimes", "colour": "red",
              "pushbullet_access_token": "secret with spaces"},
    )  # fmt: skip
    assert status == 422
    assert body["error"] == "invalid input"
    fields = sorted(detail.split(":")[0] for detail in body["details"])
    assert fields == ["colour", "notify_ssl_expiry", "pushbullet_access_token", "second_email"]
    assert "secret with spaces" not in str(body)
    status, body = await contacts_api.call("PUT", "/api/v1/accounts/bob/contact-info", data=b"[1, 2]")
    assert status == 400 and body["details"] == []
    status, body = await contacts_api.call("PUT", "/api/v1/accounts/bob/contact-info", json={"account": "alice"})
    assert status == 422 and body["details"][0].startswith("account:")
    status, body = await contacts_api.call("GET", "/api/v1/accounts/bob/contact-info")
    assert body["email"] == "bob@example.com" and body["notify_ssl_expiry"] is True
    assert len(contacts_api.daemon.events) == raised
    status, body = await contacts_api.call("GET", "/api/v1/accounts/bad%20name/contact-info")
    assert status == 422 and body["details"][0].startswith("account:")


# -- clients -----------------------------------------------------------------------------------------------------


async def test_create_and_read_a_client(contacts_api: ContactsApi) -> None:
    """POST /api/v1/clients creates (201, `Location`), with its own email preferences and accounts; GET reads it."""
    status, body = await contacts_api.call(
        "POST", "/api/v1/clients",
        json={"email": "owner@example.com", "firstname": "Olga", "lastname": "Owner", "accounts": ["bob", "carol"],
              "email_preferences": {"invoice": False}},
    )  # fmt: skip
    assert status == 201
    client_id = body["id"]
    assert body["email_preferences"] == {"general": True, "product": True, "domain": True, "invoice": False,
                                         "support": True, "affiliate": True}  # fmt: skip
    assert body["accounts"] == ["bob", "carol"]
    status, read = await contacts_api.call("GET", f"/api/v1/clients/{client_id}")
    assert status == 200 and read == body

    status, chosen = await contacts_api.call("POST", "/api/v1/clients", json={"id": 12, "email": "twelve@example.com"})
    assert status == 201 and chosen["id"] == 12


async def test_client_errors(contacts_api: ContactsApi) -> None:
    """404 for a client that does not exist; 409 for a taken id, email or account; 422 naming bad fields."""
    await contacts_api.call("POST", "/api/v1/clients", json={"id": 5, "email": "five@example.com", "accounts": ["bob"]})
    for path in ("/api/v1/clients/6", "/api/v1/clients/abc", "/api/v1/clients/6/contacts"):
        status, body = await contacts_api.call("GET", path)
        assert status == 404 and body["error"] == "Client ID Not Found", path
    conflicts: list[tuple[dict[str, Any], str]] = [
        ({"id": 5, "email": "other@example.com"}, "id"),
        ({"email": "FIVE@example.com"}, "email"),
        ({"email": "new@example.com", "accounts": ["bob"]}, "accounts"),
    ]
    for payload, field in conflicts:
        status, body = await contacts_api.call("POST", "/api/v1/clients", json=payload)
        assert status == 409 and body["details"][0].startswith(f"{field}:"), (payload, body)
    status, body = await contacts_api.call(
        "POST", "/api/v1/clients", json={"id": 0, "firstname": 3.5, "accounts": "bob", "email_preferences": {"x": 1}}
    )
    assert status == 422
    named = sorted(detail.split(":")[0] for detail in body["details"])
    assert named == ["accounts", "email", "email_preferences[x]", "firstname", "id"]
    status, _ = await contacts_api.call("GET", "/api/v1/clients/6")
    assert status == 404


async def test_patch_client_moves_accounts_and_keeps_the_icann_rule(contacts_api: ContactsApi) -> None:
    """PATCH changes a client's fields; turning its domain emails off needs a contact that keeps them (409)."""
    status, client = await contacts_api.call("POST", "/api/v1/clients", json={"email": "c@example.com"})
    status, body = await contacts_api.call(
        "PATCH", f"/api/v1/clients/{client['id']}", json={"accounts": ["dave"], "email_preferences": {"domain": False}}
    )
    assert status == 409 and body["error"] == ICANN_RULE
    status, body = await contacts_api.call("GET", f"/api/v1/clients/{client['id']}")
    assert body["accounts"] == [] and body["email_preferences"]["domain"] is True  # nothing half-written
    await contacts_api.call(
        "POST", f"/api/v1/clients/{client['id']}/contacts",
        json={"email": "d@example.com", "email_preferences": {"domain": True}},
    )  # fmt: skip
    status, body = await contacts_api.call(
        "PATCH", f"/api/v1/clients/{client['id']}", json={"accounts": ["dave"], "email_preferences": {"domain": False}}
    )
    assert status == 200 and body["accounts"] == ["dave"] and body["email_preferences"]["domain"] is False
    status, body = await contacts_api.call("PATCH", f"/api/v1/clients/{client['id']}", json={"id": 3})
    assert status == 422


# -- contacts ----------------------------------------------------------------------------------------------------

FULL_CONTACT = {
    "firstname": "Jane",
    "lastname": "Doe",
    "companyname": "Doe Ltd",
    "email": "jane@example.com",
    "address1": "1 Main Street",
    "address2": "Floor 2",
    "city": "Springfield",
    "state": "Oregon",
    "postcode": "97403",
    "country": "us",
    "phonenumber": "+1.5551234567",
    "subaccount": True,
    "password2": "correct horse",
    "permissions": ["profile", "managedomains"],
    "email_preferences": {"general": True, "domain": True},
}


async def test_contact_lifecycle(contacts_api: ContactsApi) -> None:
    """A contact with every field is created (201, `Location`), listed, read, changed and deleted (204, then 404);
    its password is never in an answer."""
    status, client = await contacts_api.call("POST", "/api/v1/clients", json={"email": "owner@example.com"})
    status, contact = await contacts_api.call("POST", f"/api/v1/clients/{client['id']}/contacts", json=FULL_CONTACT)
    assert status == 201
    expected = {k: v for k, v in FULL_CONTACT.items() if k not in ("password2", "email_preferences")}
    expected["country"] = "US"
    assert {k: contact[k] for k in expected} == expected
    assert contact["email_preferences"] == {"general": True, "product": False, "domain": True, "invoice": False,
                                            "support": False, "affiliate": False}  # fmt: skip
    assert contact["password_set"] is True and contact["client_id"] == client["id"]
    assert "correct horse" not in str(contact) and "password2" not in contact

    status, listed = await contacts_api.call("GET", f"/api/v1/clients/{client['id']}/contacts")
    assert status == 200 and listed == {"contacts": [contact]}
    status, changed = await contacts_api.call(
        "PATCH", f"/api/v1/contacts/{contact['id']}", json={"city": "Salem", "permissions": "tickets"}
    )
    assert status == 200 and changed["city"] == "Salem" and changed["permissions"] == ["tickets"]
    assert changed["firstname"] == "Jane"
    status, changed = await contacts_api.call("PATCH", f"/api/v1/contacts/{contact['id']}", json={"subaccount": False})
    assert changed["password_set"] is False  # no longer a sub-account: its password is forgotten
    status, _ = await contacts_api.call("DELETE", f"/api/v1/contacts/{contact['id']}")
    assert status == 204
    for method in ("GET", "PATCH", "DELETE"):
        status, body = await contacts_api.call(method, f"/api/v1/contacts/{contact['id']}", json={})
        assert status == 404 and body["error"] == "Contact ID Not Found"


async def test_contact_errors_name_the_field_and_change_nothing(contacts_api: ContactsApi) -> None:
    """422 lists every bad field; 409 for a duplicate address and the ICANN rule; 404 for an unknown client;
    a refused PATCH leaves the contact as it was."""
    status, body = await contacts_api.call("POST", "/api/v1/clients/77/contacts", json={"email": "a@example.com"})
    assert status == 404 and body["error"] == "Client ID Not Found"
    status, client = await contacts_api.call(
        "POST", "/api/v1/clients", json={"email": "owner@example.com", "email_preferences": {"domain": False}}
    )
    base = f"/api/v1/clients/{client['id']}/contacts"
    status, body = await contacts_api.call(
        "POST", base,
        json={"country": "Germany", "permissions": ["profile", "sudo"], "email_preferences": {"domain": "yes please"},
              "password2": "p", "subaccount": False, "nickname": "J", "postcode": "<b>"},
    )  # fmt: skip
    assert status == 422
    named = sorted(detail.split(":")[0] for detail in body["details"])
    assert named == ["country", "email_preferences[domain]", "nickname", "permissions", "postcode"]
    status, body = await contacts_api.call("POST", base, json={"password2": "p", "subaccount": False})
    assert status == 422 and body["details"][0].startswith("password2:")

    status, keeper = await contacts_api.call(
        "POST", base, json={"email": "k@example.com", "email_preferences": {"domain": True}}
    )
    status, body = await contacts_api.call("POST", base, json={"email": "K@EXAMPLE.COM"})
    assert status == 409 and body["error"] == "Duplicate Email Address" and body["details"][0].startswith("email:")
    before = (await contacts_api.call("GET", f"/api/v1/contacts/{keeper['id']}"))[1]
    status, body = await contacts_api.call(
        "PATCH", f"/api/v1/contacts/{keeper['id']}", json={"firstname": "New", "email_preferences": {"domain": False}}
    )
    assert status == 409 and body["error"] == ICANN_RULE
    status, body = await contacts_api.call("PATCH", f"/api/v1/contacts/{keeper['id']}", json={"country": "ZZ"})
    assert status == 422 and body["details"][0].startswith("country:")
    status, body = await contacts_api.call("DELETE", f"/api/v1/contacts/{keeper['id']}")
    assert status == 409 and body["error"] == ICANN_RULE
    assert (await contacts_api.call("GET", f"/api/v1/contacts/{keeper['id']}"))[1] == before
    status, body = await contacts_api.call("POST", base, data=b"not json")
    assert status == 400 and "JSON" in body["error"]
