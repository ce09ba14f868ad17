"""The shipped alert-type catalog against the Contact Manager table (seed 001) and cPanel's preferences (seed 000)."""

from __future__ import annotations

import importlib.resources
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.catalog import (
    FALLBACK_TYPE,
    PREFERENCE_LABELS,
    PREFERENCES,
    AlertType,
    CatalogError,
    DataField,
    load_catalog,
    parse_catalog,
)
from dispatcher.contacts.model import ACCOUNT_FIELDS
from dispatcher.errors import DispatcherError
from dispatcher.levels import Importance

from . import seeds

# Types the catalog carries beyond the Contact Manager table.
EXTRA_TYPES = {"ContactInfo/Change"}


@dataclass(frozen=True)
class Row:
    name: str
    trigger: str
    keys: tuple[str, ...]


def _stem(path: str) -> str:
    """`wwwacct/Notify.*.tmpl` → `wwwacct/Notify`; `Greylist/CommonProviderRemoval.html.tmpl` → its stem."""
    return path.split("*", 1)[0].rstrip(".") if "*" in path else path.split(".", 1)[0]


@pytest.fixture(scope="module")
def table() -> list[Row]:
    """The Contact Manager table of seed 001: one Row per alert type, with the keys of its template paths."""
    return [
        Row(row["alert_type"], row["event"], tuple(_stem(path) for path in row["templates"]))
        for row in seeds.contact_manager_alert_types()
    ]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _resolve(stem: str, catalog) -> str:
    """A stem as a catalog key; the seed lists one template without its folder (`SSLWebInstall`)."""
    if "/" in stem:
        return stem
    matches = [key for key in catalog.keys() if key.split("/", 1)[1] == stem]
    assert len(matches) == 1, f"folderless template {stem!r} matches {matches} in the catalog"
    return matches[0]


def test_seed_table_has_114_alert_types_and_106_template_keys(table, catalog) -> None:
    """The table parses into 114 alert types whose template paths give 106 distinct keys."""
    assert len(table) == 114
    keys = {_resolve(key, catalog) for row in table for key in row.keys}
    assert len(keys) == 106


def test_every_template_path_of_the_seed_table_is_in_the_catalog(table, catalog) -> None:
    """Each template path of the table is a catalog key whose entry is that alert type (by name or alias)."""
    missing = []
    for row in table:
        for stem in row.keys:
            key = _resolve(stem, catalog)
            if not catalog.known(key):
                missing.append(key)
                continue
            entry = catalog.get(key)
            assert row.name in {entry.name, *(alias.name for alias in entry.aliases)}, (key, row.name)
    assert missing == []


def test_catalog_is_the_table_plus_the_documented_extras(table, catalog) -> None:
    """The catalog holds exactly the table's keys and ContactInfo/Change: 107 types."""
    table_keys = {_resolve(key, catalog) for row in table for key in row.keys}
    assert set(catalog.keys()) == table_keys | EXTRA_TYPES
    assert len(catalog) == 107


def test_every_alert_type_of_the_table_is_named_once(table, catalog) -> None:
    """The catalog's names and aliases are exactly the table's alert names, each under one key or a split pair."""
    named: dict[str, set[str]] = {}
    for entry in catalog:
        if entry.key in EXTRA_TYPES:
            continue
        for name in (entry.name, *(alias.name for alias in entry.aliases)):
            named.setdefault(name, set()).add(entry.key)
    assert set(named) == {row.name for row in table}
    for row in table:
        expected = {_resolve(key, catalog) for key in row.keys} or {FALLBACK_TYPE}
        assert named[row.name] == expected, row.name
    # "Generic Notifications" has no template: it is the fallback's alias.
    generic = next(row for row in table if not row.keys)
    assert generic.name in {alias.name for alias in catalog.get(FALLBACK_TYPE).aliases}


def _gist(text: str) -> str:
    """The first 40 letters and digits before any note, to compare wording while ignoring markup and spacing."""
    return re.sub(r"[^a-z0-9]", "", re.split(r"\bNote\b", text)[0].lower())[:40]


def test_triggers_keep_the_seed_wording(table, catalog) -> None:
    """Each alert type's trigger (of its entry, or of its alias) opens with the table's own words."""
    for row in table:
        for stem in row.keys or (FALLBACK_TYPE,):
            entry = catalog.get(_resolve(stem, catalog))
            triggers = {entry.name: entry.trigger} | {alias.name: alias.trigger for alias in entry.aliases}
            assert _gist(triggers[row.name]) == _gist(row.trigger), (row.name, triggers[row.name], row.trigger)


def test_names_and_triggers_are_plain_text(catalog) -> None:
    """Names and triggers carry no HTML tags or entities (the seed's markup is stripped)."""
    for entry in catalog:
        for text in (entry.name, entry.trigger, *(a.name for a in entry.aliases), *(a.trigger for a in entry.aliases)):
            assert not re.search(r"<[a-z/][^>]*>|&[a-z]+;", text), (entry.key, text)


def test_every_entry_is_complete_and_consistent(catalog) -> None:
    """Each entry has a name, trigger, enabled importance, a valid audience, fields with JSON examples."""
    for entry in catalog:
        assert isinstance(entry, AlertType)
        assert entry.name and entry.trigger, entry.key
        assert entry.importance in (Importance.HIGH, Importance.MEDIUM, Importance.LOW), entry.key
        assert entry.audience and entry.audience <= {"system", "account"}, entry.key
        assert entry.category in {None, "general", "product", "domain", "invoice", "support", "affiliate"}
        assert entry.fields, f"{entry.key} names no data fields"
        json.dumps(dict(entry.fields))  # examples are what an event's `data` could carry
        if entry.preference is not None:
            assert "account" in entry.audience, entry.key
        assert f"{entry.app}/{entry.event}" == entry.key


def test_audiences_follow_spec(catalog) -> None:
    """Every table type reaches system contacts; ContactInfo/Change reaches only the account."""
    for entry in catalog:
        if entry.key in EXTRA_TYPES:
            continue
        assert "system" in entry.audience, entry.key
    change = catalog.get("ContactInfo/Change")
    assert change.audience == frozenset({"account"})
    assert change.preference is None
    assert {"changes", "old_email", "new_email", "disabled_preferences"} <= set(change.fields)


def test_preferences_are_real_notify_keys_of_seed_000(catalog) -> None:
    """Every gating preference used, and every one the loader accepts, is a notify_* key of seed 000, never a guard."""
    seed_keys = {p["name"] for p in seeds.savecontactinfo()["parameters"] if p["name"].startswith("notify_")}
    guards = {key for key in seed_keys if key.endswith("_notification_disabled")}
    assert PREFERENCES == seed_keys - guards
    used = {entry.preference for entry in catalog if entry.preference is not None}
    assert used <= seed_keys - guards
    # The preferences the table's types can honour are all used.
    assert {
        "notify_autossl_expiry",
        "notify_autossl_expiry_coverage",
        "notify_autossl_renewal",
        "notify_autossl_renewal_coverage",
        "notify_autossl_renewal_coverage_reduced",
        "notify_bandwidth_limit",
        "notify_disk_limit",
        "notify_password_change",
        "notify_twofactorauth_change",
    } <= used


def test_gated_types_map_to_their_preferences(catalog) -> None:
    """The preferences gate the types their seed 000 descriptions name."""
    expected = {
        "AutoSSL/CertificateExpiring": "notify_autossl_expiry",
        "AutoSSL/CertificateExpiringCoverage": "notify_autossl_expiry_coverage",
        "AutoSSL/CertificateInstalled": "notify_autossl_renewal",
        "AutoSSL/CertificateInstalledReducedCoverage": "notify_autossl_renewal_coverage_reduced",
        "AutoSSL/CertificateRenewalCoverage": "notify_autossl_renewal_coverage",
        "BandwidthUsageExceeded/Owner": "notify_bandwidth_limit",
        "Quota/DiskWarning": "notify_disk_limit",
        "ChangePassword/User": "notify_password_change",
        "TwoFactorAuth/UserEnable": "notify_twofactorauth_change",
        "TwoFactorAuth/UserDisable": "notify_twofactorauth_change",
    }
    assert {key: catalog.get(key).preference for key in expected} == expected
    # Server-internal notices are neither gated nor sent to accounts or billing contacts.
    for key in ("Check/CpanelRPMs", "cPHulk/BruteForce", "chkssrvd/Notify", "Backup/Failure"):
        entry = catalog.get(key)
        assert (entry.audience, entry.preference, entry.category) == (frozenset({"system"}), None, None)


def test_categories_are_consistent(catalog) -> None:
    """Account lifecycle and limits are `product`; certificates of the client's domains are `domain`."""
    for key in (
        "wwwacct/Notify",
        "suspendacct/Notify",
        "unsuspendacct/Notify",
        "upacct/Notify",
        "BandwidthUsageExceeded/Owner",
        "Quota/DiskWarning",
    ):
        assert catalog.get(key).category == "product", key
    autossl = [entry for entry in catalog if entry.app == "AutoSSL"]
    assert len(autossl) == 6
    assert {entry.category for entry in autossl} == {"domain"}
    assert catalog.get("Market/SSLWebInstall").category == "domain"


def test_importances_are_spread_sensibly(catalog) -> None:
    """High, medium and low are each used widely, and anchor types carry the obvious level."""
    counts = Counter(entry.importance for entry in catalog)
    assert set(counts) == {Importance.HIGH, Importance.MEDIUM, Importance.LOW}
    assert min(counts.values()) >= 15, counts
    assert catalog.get("Backup/Failure").importance == Importance.HIGH
    assert catalog.get("Check/Hack").importance == Importance.HIGH
    assert catalog.get("AutoSSL/CertificateExpiring").importance == Importance.HIGH
    assert catalog.get("Update/EndOfLife").importance == Importance.MEDIUM
    assert catalog.get("Backup/Success").importance == Importance.LOW
    assert catalog.get("AutoSSL/CertificateInstalled").importance == Importance.LOW


def test_unknown_types_get_the_fallback(catalog) -> None:
    """An unknown type resolves to Application/base, Uncategorized Notifications at Low, and is not `in`."""
    entry = catalog.get("Nobody/KnowsThis")
    assert entry.key == FALLBACK_TYPE
    assert entry.name == "Uncategorized Notifications"
    assert entry.importance == Importance.LOW
    assert entry is catalog.fallback
    assert not catalog.known("Nobody/KnowsThis")
    assert "Nobody/KnowsThis" not in catalog
    assert "AutoSSL/CertificateInstalled" in catalog
    assert catalog.get("AutoSSL/CertificateInstalled").key == "AutoSSL/CertificateInstalled"


def test_iteration_is_in_key_order_and_entries_are_frozen(catalog) -> None:
    """Iteration yields AlertType in sorted key order; entries and their fields cannot be changed."""
    keys = [entry.key for entry in catalog]
    assert keys == sorted(keys) == list(catalog.keys())
    entry = catalog.get("Quota/DiskWarning")
    assert (entry.app, entry.event) == ("Quota", "DiskWarning")
    with pytest.raises(AttributeError):
        entry.importance = Importance.LOW  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.fields["user"] = "mallory"  # type: ignore[index]


def test_default_load_is_cached_and_shipped_in_the_package(tmp_path: Path) -> None:
    """The packaged catalog.yaml is read through importlib.resources once; a copy loads the same types."""
    resource = importlib.resources.files("dispatcher.catalog") / "catalog.yaml"
    assert resource.is_file()
    assert load_catalog() is load_catalog()
    copy = tmp_path / "catalog.yaml"
    copy.write_text(resource.read_text(encoding="utf-8"), encoding="utf-8")
    loaded = load_catalog(copy)
    assert loaded is not load_catalog()
    assert list(loaded) == list(load_catalog())


GOOD_BASE = """\
  Application/base:
    name: Uncategorized Notifications
    trigger: A notification no other type handles.
    importance: low
    audience: [system]
    preference: null
    category: null
    fields: {message: hello}
"""


def _entry(key: str, **overrides: str) -> str:
    values = {
        "name": "Thing",
        "trigger": "Something happens.",
        "importance": "high",
        "audience": "[system, account]",
        "preference": "notify_disk_limit",
        "category": "product",
        "fields": "{user: bob}",
    } | overrides
    body = "".join(f"    {name}: {value}\n" for name, value in values.items() if value != "<omit>")
    return f"  {key}:\n{body}"


def test_a_minimal_valid_catalog_parses() -> None:
    """A catalog of the fallback and one entry parses into those two types with their values."""
    catalog = parse_catalog("types:\n" + GOOD_BASE + _entry("Quota/DiskWarning"))
    assert catalog.keys() == ("Application/base", "Quota/DiskWarning")
    entry = catalog.get("Quota/DiskWarning")
    assert entry.audience == frozenset({"system", "account"})
    assert (entry.importance, entry.preference, entry.category) == (Importance.HIGH, "notify_disk_limit", "product")
    assert dict(entry.fields) == {"user": "bob"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry("Quota/DiskWarning", importance="urgent"), "unknown importance 'urgent'"),
        (_entry("Quota/DiskWarning", audience="[system, reseller]"), "audience must be"),
        (_entry("Quota/DiskWarning", audience="[]"), "audience must be"),
        (_entry("Quota/DiskWarning", preference="notify_everything"), "'notify_everything' is not a notify_*"),
        (
            _entry("Quota/DiskWarning", preference="notify_password_change_notification_disabled"),
            "is not a notify_* preference",
        ),
        (_entry("Quota/DiskWarning", audience="[system]"), "the audience has no `account`"),
        (_entry("Quota/DiskWarning", category="billing"), "category 'billing'"),
        (_entry("Quota/DiskWarning", fields="[user]"), "fields must map"),
        (_entry("Quota/DiskWarning", fields="{domain: {meaning: x, example: a, note: b}}"), "exactly the keys"),
        (_entry("Quota/DiskWarning", fields="{domain: {meaning: '', example: a}}"), "meaning must be"),
        (_entry("Quota/DiskWarning", account="{meaning: The account.}"), "account:"),
        (_entry("Quota/DiskWarning", account="bob"), "account must be {meaning, example}"),
        (_entry("Quota/DiskWarning", name="''"), "name must be a non-empty string"),
        (_entry("Quota/DiskWarning", importance="<omit>"), "missing keys: importance"),
        (_entry("Quota/DiskWarning", colour="red"), "unknown keys: colour"),
        (_entry("QuotaDiskWarning"), "not of the form App/Event"),
        (_entry("Backup/Success", aliases="[{name: cPanel Backup}]"), "alias"),
    ],
)
def test_broken_entries_are_refused_with_a_clear_message(entry: str, message: str) -> None:
    """A bad value raises CatalogError (a DispatcherError) naming the line, the entry and the problem."""
    with pytest.raises(CatalogError) as caught:
        parse_catalog("types:\n" + GOOD_BASE + entry, source="cat.yaml")
    assert isinstance(caught.value, DispatcherError)
    assert message in str(caught.value)
    assert re.search(r"cat\.yaml:10: \S+/?\S*: ", str(caught.value)), str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("types:\n" + _entry("Quota/DiskWarning"), "no Application/base entry"),
        ("kinds: {}\n", "single key `types:`"),
        ("- just a list\n", "single key `types:`"),
        ("", "single key `types:`"),
        ("types: {a: [\n", "invalid YAML"),
    ],
)
def test_broken_files_are_refused(text: str, message: str) -> None:
    """A file without the fallback, of the wrong shape, or not YAML at all raises CatalogError."""
    with pytest.raises(CatalogError, match=re.escape(message)):
        parse_catalog(text, source="cat.yaml")


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    """Loading a path that does not exist raises CatalogError naming the path."""
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "nope.yaml")


def test_described_fields_and_the_account_parse() -> None:
    """`fields` entries of the form `{meaning, example}` give `data_fields` (in file order) and `fields` the examples;
    an entry's `account:` says what the event's account is; a bare value is an example without a meaning."""
    entry = _entry(
        "Quota/DiskWarning",
        account="{meaning: The account near its quota., example: bob}",
        fields="{domain: {meaning: 'The main domain: of the account.', example: example.com}, percent_used: 92}",
    )
    alert = parse_catalog("types:\n" + GOOD_BASE + entry).get("Quota/DiskWarning")
    assert list(alert.data_fields) == ["domain", "percent_used"]
    assert alert.data_fields["domain"] == DataField("domain", "The main domain: of the account.", "example.com")
    assert alert.data_fields["percent_used"] == DataField("percent_used", None, 92)
    assert dict(alert.fields) == {"domain": "example.com", "percent_used": 92}
    assert alert.account == DataField("account", "The account near its quota.", "bob")
    assert parse_catalog("types:\n" + GOOD_BASE).fallback.account is None


def test_an_alert_type_built_from_examples_alone_still_describes_its_fields() -> None:
    """Code that builds an AlertType with `fields` only (the first form) gets `data_fields` without meanings, and
    no account."""
    alert = AlertType(
        key="Custom/Thing",
        name="Thing",
        trigger="Something happens.",
        importance=Importance.LOW,
        audience=frozenset({"system"}),
        preference=None,
        category=None,
        fields={"volume": "/srv"},
    )
    assert dict(alert.data_fields) == {"volume": DataField("volume", None, "/srv")}
    assert alert.account is None


def test_every_shipped_field_and_account_has_a_meaning(catalog) -> None:
    """The shipped catalog describes every data field and every account it names: a sentence and an example."""
    for entry in catalog:
        assert list(entry.data_fields) == list(entry.fields), entry.key
        for name, described in entry.data_fields.items():
            assert described.name == name and described.example == entry.fields[name]
            assert described.meaning and described.meaning.endswith((".", ")")), (entry.key, name)
        if entry.account is not None:
            assert entry.account.meaning and "account" in entry.account.meaning, entry.key
            assert isinstance(entry.account.example, str) and entry.account.example


def test_the_account_is_never_a_data_field_where_the_event_names_it(catalog) -> None:
    """Where a type's messages name the account, the account is the event's `account`: no `user` field beside it.
    Types whose audience includes the account all name it."""
    for entry in catalog:
        if entry.account is not None:
            assert "user" not in entry.fields, entry.key
        if "account" in entry.audience:
            assert entry.account is not None, entry.key
    assert catalog.get("Quota/DiskWarning").account.example == "bob"
    assert catalog.get("cPHulk/Login").account is None and "user" in catalog.get("cPHulk/Login").fields


def test_preference_labels_are_cpanels_own_words(catalog) -> None:
    """The label of each gating preference (shown in account footers) is cPanel's `descp` of seed 000, as the
    contacts module serves it."""
    descriptions = {field.name: field.descp for field in ACCOUNT_FIELDS}
    assert {name: descriptions[name] for name in PREFERENCES} == dict(PREFERENCE_LABELS)
