"""The contact model: fields and defaults against seed 000, value checks, password hashing."""

from __future__ import annotations

import pytest

from dispatcher.contacts.clients import hash_password, verify_password
from dispatcher.contacts.countries import ISO_3166_ALPHA2
from dispatcher.contacts.model import (
    ACCOUNT_FIELDS,
    PERMISSIONS,
    PREFERENCE_DEFAULTS,
    AccountContactInfo,
    InvalidInput,
    email_problem,
    parse_bool,
    validate_account_updates,
    validate_contact_fields,
)

from . import seeds


def test_every_notify_key_of_seed_000_is_a_field_defaulting_to_on() -> None:
    """Every `notify_*` key the seed mentions is an account field, a boolean defaulting to 1 as documented,
    and the string fields are exactly email, second_email and the Pushbullet token, defaulting to empty as
    documented."""
    parameters = {p["name"]: p for p in seeds.savecontactinfo()["parameters"]}
    seed_keys = {name for name in parameters if name.startswith("notify_")}
    assert seed_keys == set(PREFERENCE_DEFAULTS)
    assert all(PREFERENCE_DEFAULTS.values())
    assert {(parameters[name]["type"], parameters[name]["default"]) for name in seed_keys} == {("Boolean", 1)}
    strings = {spec.name: spec.default for spec in ACCOUNT_FIELDS if spec.kind == "string"}
    assert strings == {"email": "", "second_email": "", "pushbullet_access_token": ""}
    assert {(parameters[name]["type"], parameters[name]["default"]) for name in strings} == {("string", "")}


def test_documented_permissions_are_the_ones_accepted() -> None:
    """The sub-account permissions are the documented thirteen; any other name is refused."""
    assert len(PERMISSIONS) == 13
    assert validate_contact_fields({"permissions": ",".join(reversed(PERMISSIONS))})["permissions"] == PERMISSIONS
    with pytest.raises(InvalidInput) as caught:
        validate_contact_fields({"permissions": "profile,admin"})
    assert caught.value.details[0].startswith("permissions: unknown permission(s) admin")


@pytest.mark.parametrize(
    "address", ["bert@example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.ie", "x@xn--bcher-kva.de"]
)
def test_valid_addresses(address: str) -> None:
    """Ordinary addresses, sub-addresses and punycode domains are accepted."""
    assert email_problem(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "plain",
        "@example.com",
        "bert@",
        "bert@localhost",
        "bert@example..com",
        "a b@example.com",
        "bert@example.com\r\nBcc: victim@example.org",
        "bert@example.com, other@example.com",
        ".bert@example.com",
        "bert@-example.com",
        "bert@example.123",
        "x" * 65 + "@example.com",
    ],
)
def test_invalid_addresses(address: str) -> None:
    """Malformed addresses, and anything that could add a header or a recipient, are refused."""
    assert email_problem(address) is not None


def test_booleans_accept_form_and_json_spellings_only() -> None:
    """1/0, true/false, on/off, yes/no (any case) and JSON booleans are booleans; anything else is refused."""
    assert [parse_bool(v) for v in (True, 1, "1", "on", "TRUE", "yes")] == [True] * 6
    assert [parse_bool(v) for v in (False, 0, "0", "off", "false", "no", "")] == [False] * 7
    for bad in ("2", 2, "maybe", None, 1.0, []):
        with pytest.raises(ValueError, match="expected a boolean"):
            parse_bool(bad)


def test_countries_are_iso_3166_alpha_2() -> None:
    """The 249 assigned alpha-2 codes; lower case is normalised; `UK` and alpha-3 are refused."""
    assert len(ISO_3166_ALPHA2) == 249
    assert validate_contact_fields({"country": "gb"})["country"] == "GB"
    for bad in ("UK", "GBR", "G", 44):
        with pytest.raises(InvalidInput):
            validate_contact_fields({"country": bad})


def test_token_is_secret_in_reprs_and_views() -> None:
    """An account's token is in no repr and is masked in its public view; a malformed one is not echoed."""
    info = AccountContactInfo(account="bob", pushbullet_access_token="o.Secret")
    assert "o.Secret" not in repr(info)
    assert "o.Secret" not in str(info.public_view())
    with pytest.raises(InvalidInput) as caught:
        validate_account_updates({"pushbullet_access_token": "o.Se cret"})
    assert "Se cret" not in str(caught.value)


def test_password_hash_is_salted_and_slow() -> None:
    """scrypt with a fresh salt each time: equal passwords hash differently, both verify, others do not."""
    first, second = hash_password("hunter2"), hash_password("hunter2")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert verify_password("hunter2", first) and verify_password("hunter2", second)
    assert not verify_password("hunter3", first)
    assert not verify_password("hunter2", "md5$whatever")
