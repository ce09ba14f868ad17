"""Routing: effective importance, routing rules, the system contacts source and the planner (SPEC §2, §3, §10)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import pytest

from dispatcher.catalog import AlertType, Catalog, load_catalog
from dispatcher.config import Config, parse_config
from dispatcher.events import Event, parse_event
from dispatcher.levels import Importance, Threshold
from dispatcher.routing import (
    Candidate,
    Plan,
    Recipient,
    SystemContacts,
    effective_importance,
    explain_importance,
    plan,
    plan_event,
    select_contacts,
)
from dispatcher.routing.importance import importance_for_alert
from dispatcher.routing.routes import route_matches

ALL_CHANNELS = frozenset({"email", "pushbullet", "posturl"})


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def config_of(*parts: str) -> Config:
    """A config from YAML fragments (each dedented on its own), with a fixed hostname."""
    return parse_config("hostname: server1.example.com\n" + "\n".join(textwrap.dedent(part) for part in parts))


def event_of(event_type: str, **fields: Any) -> Event:
    return parse_event({"type": event_type, **fields}, topic_type=None, default_host="server1.example.com")


class StaticSource:
    """A recipient source for tests: proposes the same candidates for every event."""

    name = "static"

    def __init__(self, *candidates: Candidate) -> None:
        self._candidates = list(candidates)

    async def candidates(self, event: Event, alert: AlertType, config: Config) -> list[Candidate]:
        return list(self._candidates)


def account(name: str, *emails: str, suppressed: str | None = None) -> Candidate:
    """An account recipient as the contacts source proposes it: email only, importance does not filter."""
    recipient = Recipient(kind="account", name=f"account:{name}", targets={"email": emails}, thresholds=None)
    return Candidate(recipient, suppressed=suppressed)


async def plan_for(
    event: Event,
    config: Config,
    catalog: Catalog,
    *extra: Candidate,
    channels: frozenset[str] = ALL_CHANNELS,
) -> Plan:
    sources: list[Any] = [SystemContacts()]
    if extra:
        sources.append(StaticSource(*extra))
    return await plan_event(event, config=config, catalog=catalog, sources=sources, channels=channels)


def delivered(result: Plan) -> list[tuple[str, str, str]]:
    return [(d.recipient.name, d.channel, d.target) for d in result.deliveries]


def suppressed(result: Plan) -> list[tuple[str, str | None, str | None, str]]:
    return [(s.recipient_name, s.channel, s.target, s.reason) for s in result.suppressed]


# -- effective importance ---------------------------------------------------------------------------------------


def test_catalog_default_applies_without_a_config_entry(catalog: Catalog) -> None:
    """With no `importance:` entry a known type takes its catalog default (Backup/Failure ships as high)."""
    config = config_of("")
    assert catalog.get("Backup/Failure").importance == Importance.HIGH
    assert effective_importance("Backup/Failure", config, catalog) == Importance.HIGH
    assert explain_importance("Backup/Failure", config, catalog).origin == "catalog"


def test_app_entry_beats_the_catalog_default(catalog: Catalog) -> None:
    """`Backup/*: low` lowers every Backup type, whatever the catalog says."""
    config = config_of("importance: {Backup/*: low}")
    assert effective_importance("Backup/Failure", config, catalog) == Importance.LOW
    assert effective_importance("Backup/Transport", config, catalog) == Importance.LOW
    assert explain_importance("Backup/Failure", config, catalog).origin == "config App/*"
    # Another application keeps its default.
    assert effective_importance("AutoSSL/CertificateExpiring", config, catalog) == Importance.HIGH


def test_exact_entry_beats_the_app_entry(catalog: Catalog) -> None:
    """An entry for the exact type wins over its application's `App/*` entry, in either order in the file."""
    for text in (
        "importance: {Backup/*: low, Backup/Failure: medium}",
        "importance: {Backup/Failure: medium, Backup/*: low}",
    ):
        config = config_of(text)
        assert effective_importance("Backup/Failure", config, catalog) == Importance.MEDIUM
        assert explain_importance("Backup/Failure", config, catalog).origin == "config"
        assert effective_importance("Backup/Success", config, catalog) == Importance.LOW


def test_unknown_type_is_low_unless_configured(catalog: Catalog) -> None:
    """A type outside the catalog is Low (it renders as Application/base); a config entry can still set it."""
    assert not catalog.known("Custom/Thing")
    assert effective_importance("Custom/Thing", config_of(""), catalog) == Importance.LOW
    assert explain_importance("Custom/Thing", config_of(""), catalog).origin == "default"
    assert effective_importance("Custom/Thing", config_of("importance: {Custom/*: high}"), catalog) == Importance.HIGH
    assert effective_importance("Custom/Thing", config_of("importance: {Custom/Thing: medium}"), catalog) == (
        Importance.MEDIUM
    )


def test_a_config_entry_can_disable_a_type(catalog: Catalog) -> None:
    """`disabled` is an importance like the others for the lookup."""
    config = config_of("importance: {Backup/*: disabled}")
    assert effective_importance("Backup/Failure", config, catalog) == Importance.DISABLED


def test_importance_from_the_alert_entry_agrees_with_the_catalog_lookup(catalog: Catalog) -> None:
    """What a recipient source computes from the alert entry equals `effective_importance`, for every type."""
    config = config_of("importance: {Backup/*: low, AutoSSL/CertificateInstalled: high, Custom/*: medium}")
    for event_type in [*catalog.keys(), "Custom/Thing", "Other/Thing"]:
        alert = catalog.get(event_type)
        assert importance_for_alert(event_type, config, alert) == effective_importance(event_type, config, catalog)


# -- thresholds: the full matrix ----------------------------------------------------------------------------------

# The Contact Manager's table, written out rather than computed: which importances each threshold receives.
RECEIVES = {
    Threshold.NONE: set(),
    Threshold.HIGH: {Importance.HIGH},
    Threshold.MEDIUM: {Importance.HIGH, Importance.MEDIUM},
    Threshold.ALL: {Importance.HIGH, Importance.MEDIUM, Importance.LOW},
}


@pytest.mark.parametrize("threshold", list(Threshold), ids=lambda t: t.label)
@pytest.mark.parametrize("importance", list(Importance), ids=lambda i: i.label)
async def test_threshold_matrix(importance: Importance, threshold: Threshold, catalog: Catalog) -> None:
    """A system contact's channel gets an event exactly when its threshold receives that importance."""
    config = config_of(
        f"""
        importance: {{Test/Event: {importance.label}}}
        contacts:
          root:
            email: [root@example.com]
            receives: {{email: {threshold.label}}}
        """
    )
    result = await plan_for(event_of("Test/Event"), config, catalog)
    assert result.importance == importance
    if importance in RECEIVES[threshold]:
        assert delivered(result) == [("root", "email", "root@example.com")]
        assert suppressed(result) == []
    elif importance == Importance.DISABLED:
        assert delivered(result) == []
        assert suppressed(result) == [("root", None, None, "importance disabled")]
    elif threshold == Threshold.NONE:
        assert delivered(result) == []
        assert suppressed(result) == [("root", "email", "root@example.com", "channel off (none)")]
    else:
        assert delivered(result) == []
        assert suppressed(result) == [("root", "email", "root@example.com", f"below threshold {threshold.label}")]


async def test_default_thresholds_per_channel(catalog: Catalog) -> None:
    """Without `receives`, email and posturl get every importance and pushbullet high and medium (SPEC §3)."""
    config = config_of(
        """
        importance: {Test/Low: low, Test/Medium: medium}
        contacts:
          root:
            email: [root@example.com]
            pushbullet: [tok-root]
            posturl: ["https://hooks.example.com/n"]
        """
    )
    low = await plan_for(event_of("Test/Low"), config, catalog)
    assert [(d.channel) for d in low.deliveries] == ["email", "posturl"]
    assert suppressed(low) == [("root", "pushbullet", "tok-root", "below threshold medium")]
    medium = await plan_for(event_of("Test/Medium"), config, catalog)
    assert [(d.channel) for d in medium.deliveries] == ["email", "pushbullet", "posturl"]


async def test_disabled_event_reaches_no_kind_of_recipient(catalog: Catalog) -> None:
    """A disabled event is delivered to nobody, accounts included (whom importance otherwise does not filter)."""
    config = config_of(
        """
        importance: {Backup/*: disabled}
        contacts: {root: {email: [root@example.com]}}
        """
    )
    result = await plan_for(event_of("Backup/Failure"), config, catalog, account("bob", "bob@example.net"))
    assert delivered(result) == []
    assert suppressed(result) == [
        ("root", None, None, "importance disabled"),
        ("account:bob", None, None, "importance disabled"),
    ]


async def test_importance_does_not_filter_account_recipients(catalog: Catalog) -> None:
    """A recipient without thresholds gets low events even where every system channel is set to high only."""
    config = config_of("contacts: {root: {email: [root@example.com], receives: {email: high}}}")
    result = await plan_for(event_of("Backup/Success"), config, catalog, account("bob", "bob@example.net"))
    assert result.importance == Importance.LOW
    assert delivered(result) == [("account:bob", "email", "bob@example.net")]
    assert suppressed(result) == [("root", "email", "root@example.com", "below threshold high")]


# -- other suppressions -------------------------------------------------------------------------------------------


async def test_a_source_suppression_is_kept_with_its_reason(catalog: Catalog) -> None:
    """A candidate its source suppressed (a preference off) gets nothing, listed with the source's reason."""
    config = config_of("contacts: {root: {email: [root@example.com]}}")
    off = account("bob", "bob@example.net", suppressed="preference notify_disk_limit off")
    result = await plan_for(event_of("Quota/DiskWarning", account="bob"), config, catalog, off)
    assert delivered(result) == [("root", "email", "root@example.com")]
    assert suppressed(result) == [("account:bob", None, None, "preference notify_disk_limit off")]


async def test_channel_not_available(catalog: Catalog) -> None:
    """An address on a channel that is not configured or installed is suppressed naming the channel."""
    config = config_of("contacts: {root: {email: [root@example.com], pushbullet: [tok-root]}}")
    result = await plan_for(event_of("Backup/Failure"), config, catalog, channels=frozenset({"email"}))
    assert delivered(result) == [("root", "email", "root@example.com")]
    assert suppressed(result) == [("root", "pushbullet", "tok-root", "channel pushbullet not available")]


def test_plugin_channel_targets_are_planned_like_the_others(catalog: Catalog) -> None:
    """A channel the planner has never heard of is delivered when available and reported when not."""
    recipient = Recipient(kind="contact", name="contact:7", targets={"sms": ("+15550100",)}, thresholds=None)
    alert = catalog.get("Backup/Failure")
    event = event_of("Backup/Failure")
    available = plan(event, alert, Importance.HIGH, [Candidate(recipient)], {"email", "sms"})
    assert delivered(available) == [("contact:7", "sms", "+15550100")]
    missing = plan(event, alert, Importance.HIGH, [Candidate(recipient)], {"email"})
    assert suppressed(missing) == [("contact:7", "sms", "+15550100", "channel sms not available")]


async def test_no_address(catalog: Catalog) -> None:
    """A recipient with no address on any channel is listed once as `no address`."""
    config = config_of("contacts: {root: {email: [root@example.com]}, nobody: {}}")
    result = await plan_for(event_of("Backup/Failure"), config, catalog, account("carol"))
    assert delivered(result) == [("root", "email", "root@example.com")]
    assert suppressed(result) == [("nobody", None, None, "no address"), ("account:carol", None, None, "no address")]


# -- one delivery per address ----------------------------------------------------------------------------------------


async def test_shared_email_address_is_delivered_once(catalog: Catalog) -> None:
    """Two recipients sharing an email address (in any case) make one delivery; the first keeps it."""
    config = config_of(
        """
        contacts:
          root: {email: [admin@example.com]}
          ops: {email: [Admin@Example.COM, ops@example.com]}
        """
    )
    result = await plan_for(event_of("Backup/Failure"), config, catalog, account("bob", "ADMIN@example.com"))
    assert delivered(result) == [("root", "email", "admin@example.com"), ("ops", "email", "ops@example.com")]
    assert suppressed(result) == [
        ("ops", "email", "Admin@Example.COM", "duplicate of root"),
        ("account:bob", "email", "ADMIN@example.com", "duplicate of root"),
    ]


async def test_an_address_suppressed_for_one_recipient_still_reaches_another(catalog: Catalog) -> None:
    """Only a delivery claims an address: a contact below threshold does not take it from the account after it."""
    config = config_of("contacts: {root: {email: [admin@example.com], receives: {email: high}}}")
    result = await plan_for(event_of("Backup/Success"), config, catalog, account("bob", "admin@example.com"))
    assert delivered(result) == [("account:bob", "email", "admin@example.com")]
    assert suppressed(result) == [("root", "email", "admin@example.com", "below threshold high")]


async def test_tokens_and_urls_are_compared_exactly(catalog: Catalog) -> None:
    """Pushbullet tokens differing in case are different targets; the same token twice is one delivery."""
    config = config_of(
        """
        contacts:
          root: {pushbullet: [tok-ABC], posturl: ["https://hooks.example.com/n?k=1"]}
          ops: {pushbullet: [tok-abc, tok-ABC], posturl: ["https://hooks.example.com/n?k=1"]}
        """
    )
    result = await plan_for(event_of("Backup/Failure"), config, catalog)
    assert delivered(result) == [
        ("root", "pushbullet", "tok-ABC"),
        ("root", "posturl", "https://hooks.example.com/n?k=1"),
        ("ops", "pushbullet", "tok-abc"),
    ]
    assert suppressed(result) == [
        ("ops", "pushbullet", "tok-ABC", "duplicate of root"),
        ("ops", "posturl", "https://hooks.example.com/n?k=1", "duplicate of root"),
    ]


def test_plan_is_pure_and_ordered(catalog: Catalog) -> None:
    """The same input gives the same plan; deliveries follow candidate, then channel, then address order."""
    first = Recipient("account", "account:a", {"email": ("a1@example.com", "a2@example.com")}, None)
    second = Recipient("client", "client:9", {"email": ("c@example.com",)}, None)
    candidates = [Candidate(second), Candidate(first)]
    alert, event = catalog.get("Backup/Failure"), event_of("Backup/Failure")
    result = plan(event, alert, Importance.LOW, candidates, ALL_CHANNELS)
    assert result == plan(event, alert, Importance.LOW, candidates, ALL_CHANNELS)
    assert delivered(result) == [
        ("client:9", "email", "c@example.com"),
        ("account:a", "email", "a1@example.com"),
        ("account:a", "email", "a2@example.com"),
    ]


def test_reprs_do_not_reveal_targets() -> None:
    """Recipients, deliveries and suppressions hold tokens and URLs; their reprs must not show them."""
    recipient = Recipient("system", "root", {"pushbullet": ("o.SECRETTOKEN",)}, {"pushbullet": Threshold.ALL})
    result = plan(
        event_of("Backup/Failure"),
        load_catalog().get("Backup/Failure"),
        Importance.HIGH,
        [Candidate(recipient), Candidate(recipient)],
        {"pushbullet"},
    )
    assert len(result.deliveries) == 1 and len(result.suppressed) == 1
    assert "SECRETTOKEN" not in repr(recipient)
    assert "SECRETTOKEN" not in repr(result)


# -- routes --------------------------------------------------------------------------------------------------------

THREE_CONTACTS = """
contacts:
  root: {email: [root@example.com]}
  backups: {email: [backups@example.com]}
  oncall: {email: [oncall@example.com]}
"""


def routed(config: Config, event: Event, importance: Importance = Importance.HIGH) -> tuple[list[str], list[int]]:
    return select_contacts(event, importance, config)


def test_no_rule_fitting_means_every_system_contact() -> None:
    """Without routes, or with none fitting, every contact gets the event, in config order."""
    assert routed(config_of(THREE_CONTACTS), event_of("Backup/Failure")) == (["root", "backups", "oncall"], [])
    config = config_of(THREE_CONTACTS, "routes: [{match: {type: 'AutoSSL/*'}, to: [oncall]}]")
    assert routed(config, event_of("Backup/Failure")) == (["root", "backups", "oncall"], [])


def test_first_fitting_rule_decides() -> None:
    """The first fitting rule without `continue` decides; later fitting rules are not consulted."""
    config = config_of(
        THREE_CONTACTS,
        """
        routes:
          - {match: {type: "AutoSSL/*"}, to: [root]}
          - {match: {type: "Backup/*"}, to: [backups]}
          - {match: {}, to: [oncall]}
        """,
    )
    assert routed(config, event_of("Backup/Failure")) == (["backups"], [1])
    assert routed(config, event_of("AutoSSL/CertificateExpiring")) == (["root"], [0])
    assert routed(config, event_of("Quota/DiskWarning")) == (["oncall"], [2])


def test_continue_lets_later_rules_add_contacts() -> None:
    """A fitting rule with `continue: true` lets the next fitting rules add theirs, until one without it."""
    config = config_of(
        THREE_CONTACTS,
        """
        routes:
          - {match: {min_importance: high}, to: [oncall], continue: true}
          - {match: {type: "AutoSSL/*"}, to: [root]}
          - {match: {type: "Backup/*"}, to: [backups, oncall]}
          - {match: {type: "Backup/*"}, to: [root]}
        """,
    )
    assert routed(config, event_of("Backup/Failure"), Importance.HIGH) == (["oncall", "backups"], [0, 2])
    assert routed(config, event_of("Backup/Failure"), Importance.LOW) == (["backups", "oncall"], [2])


def test_a_continue_rule_alone_still_narrows() -> None:
    """When only `continue` rules fit, their contacts get the event, not every contact."""
    config = config_of(THREE_CONTACTS, "routes: [{match: {type: 'Backup/*'}, to: [backups], continue: true}]")
    assert routed(config, event_of("Backup/Failure")) == (["backups"], [0])


def test_an_empty_match_fits_everything() -> None:
    """`match: {}` (or no match at all) fits every event."""
    config = config_of(THREE_CONTACTS, "routes: [{match: {}, to: [root]}]")
    assert routed(config, event_of("Custom/Thing", account="bob")) == (["root"], [0])
    config = config_of(THREE_CONTACTS, "routes: [{to: [oncall]}]")
    assert routed(config, event_of("Backup/Failure"), Importance.LOW) == (["oncall"], [0])


def match_of(match: str) -> Any:
    return config_of(THREE_CONTACTS, f"routes: [{{match: {match}, to: [root]}}]").routes[0].match


@pytest.mark.parametrize(
    ("match", "event_type", "fits"),
    [
        ("{type: 'Backup/*'}", "Backup/Failure", True),
        ("{type: 'Backup/*'}", "AutoSSL/CertificateExpiring", False),
        ("{type: 'Backup/Failure'}", "Backup/Failure", True),
        ("{type: 'Backup/Failure'}", "Backup/FailureX", False),
        ("{type: '*/Failure'}", "Backup/Failure", True),
        ("{type: 'backup/*'}", "Backup/Failure", False),  # types are case-sensitive
        ("{type: 'Backup/[FS]*'}", "Backup/Success", True),
        ("{app: Backup}", "Backup/Failure", True),
        ("{app: Backup}", "BackupX/Failure", False),
        ("{app: Back}", "Backup/Failure", False),
    ],
)
def test_type_and_app(match: str, event_type: str, fits: bool) -> None:
    """`type` is a glob over the whole type; `app` is the exact application name."""
    assert route_matches(match_of(match), event_of(event_type), Importance.LOW) is fits


# Which importances each `min_importance` admits, written out: at or above it, never disabled.
AT_LEAST = {
    Importance.HIGH: {Importance.HIGH},
    Importance.MEDIUM: {Importance.HIGH, Importance.MEDIUM},
    Importance.LOW: {Importance.HIGH, Importance.MEDIUM, Importance.LOW},
}


@pytest.mark.parametrize("minimum", list(AT_LEAST), ids=lambda i: i.label)
@pytest.mark.parametrize("importance", list(Importance), ids=lambda i: i.label)
def test_min_importance(minimum: Importance, importance: Importance) -> None:
    """`min_importance: medium` fits medium and high events, never disabled ones."""
    fits = route_matches(match_of(f"{{min_importance: {minimum.label}}}"), event_of("Backup/Failure"), importance)
    assert fits is (importance in AT_LEAST[minimum])


@pytest.mark.parametrize(
    ("match", "fields", "fits"),
    [
        ("{account: bob}", {"account": "bob"}, True),
        ("{account: bob}", {"account": "bobby"}, False),
        ("{account: bob}", {}, False),
        ("{account: 'reseller_*'}", {"account": "reseller_ann"}, True),
        ("{account: '*'}", {}, False),  # an event without an account never fits a rule about accounts
        ("{host: 'web*.example.com'}", {"host": "web3.example.com"}, True),
        ("{host: 'web*.example.com'}", {"host": "WEB3.Example.com"}, True),  # host names ignore case
        ("{host: 'web*.example.com'}", {"host": "db1.example.com"}, False),
        ("{host: server1.example.com}", {}, True),  # the default host is the config's hostname
        ("{data: {domain: example.com}}", {"data": {"domain": "example.com"}}, True),
        ("{data: {domain: example.com}}", {"data": {"domain": "example.org"}}, False),
        ("{data: {domain: '*.example.com'}}", {"data": {"domain": "shop.example.com"}}, True),
        ("{data: {domain: example.com}}", {"data": {}}, False),
        ("{data: {domain: '*'}}", {}, False),  # a missing field never fits, not even `*`
        ("{data: {days: '3'}}", {"data": {"days": 3}}, True),
        ("{data: {days: '3'}}", {"data": {"days": 30}}, False),
        ("{data: {days: '[1-3]'}}", {"data": {"days": 2}}, True),
        ("{data: {retry: 'true'}}", {"data": {"retry": True}}, True),  # JSON true is matched as `true`
        ("{data: {retry: 'true'}}", {"data": {"retry": False}}, False),
        ("{data: {a: x, b: y}}", {"data": {"a": "x", "b": "y"}}, True),
        ("{data: {a: x, b: y}}", {"data": {"a": "x", "b": "z"}}, False),
        ("{account: bob, data: {domain: example.com}}", {"account": "bob", "data": {"domain": "example.com"}}, True),
        ("{account: bob, data: {domain: example.com}}", {"account": "ann", "data": {"domain": "example.com"}}, False),
    ],
)
def test_account_host_and_data(match: str, fields: dict[str, Any], fits: bool) -> None:
    """`account`, `host` and `data` values are globs; every field a match sets must fit."""
    assert route_matches(match_of(match), event_of("Backup/Failure", **fields), Importance.LOW) is fits


# -- the system contacts source ----------------------------------------------------------------------------------


async def candidates_of(config: Config, event: Event, catalog: Catalog) -> Sequence[Candidate]:
    return await SystemContacts().candidates(event, catalog.get(event.type), config)


async def test_contacts_left_out_by_routes_are_proposed_as_suppressed(catalog: Catalog) -> None:
    """Routed contacts come first in route order; the others are suppressed naming the rules that decided."""
    config = config_of(
        THREE_CONTACTS,
        """
        routes:
          - {match: {type: "Backup/*"}, to: [oncall], continue: true}
          - {match: {type: "Backup/Failure"}, to: [backups]}
        """,
    )
    result = await plan_for(event_of("Backup/Failure"), config, catalog)
    assert delivered(result) == [
        ("oncall", "email", "oncall@example.com"),
        ("backups", "email", "backups@example.com"),
    ]
    assert suppressed(result) == [("root", None, None, "not selected by routes (routes[0], routes[1])")]


async def test_routes_see_the_effective_importance(catalog: Catalog) -> None:
    """`min_importance` is compared with the importance after config overrides, not the catalog default."""
    config = config_of(
        THREE_CONTACTS,
        """
        importance: {Backup/Failure: low}
        routes:
          - {match: {min_importance: high}, to: [oncall]}
          - {match: {}, to: [root]}
        """,
    )
    candidates = await candidates_of(config, event_of("Backup/Failure"), catalog)
    assert [(c.recipient.name, c.suppressed) for c in candidates] == [
        ("root", None),
        ("backups", "not selected by routes (routes[1])"),
        ("oncall", "not selected by routes (routes[1])"),
    ]


async def test_system_recipient_carries_targets_and_thresholds(catalog: Catalog) -> None:
    """A system contact becomes a `system` recipient with its addresses (secrets revealed) and thresholds."""
    config = config_of(
        """
        contacts:
          root:
            email: [root@example.com]
            pushbullet: [{token: tok-root}]
            posturl: ["https://hooks.example.com/n?key=abc"]
            receives: {posturl: high}
        """
    )
    (candidate,) = await candidates_of(config, event_of("Backup/Failure"), catalog)
    recipient = candidate.recipient
    assert (recipient.kind, recipient.name, candidate.suppressed) == ("system", "root", None)
    assert dict(recipient.targets) == {
        "email": ("root@example.com",),
        "pushbullet": ("tok-root",),
        "posturl": ("https://hooks.example.com/n?key=abc",),
    }
    assert dict(recipient.thresholds or {}) == {
        "email": Threshold.ALL,
        "pushbullet": Threshold.MEDIUM,
        "posturl": Threshold.HIGH,
    }


async def test_account_only_types_do_not_reach_system_contacts(catalog: Catalog) -> None:
    """A type whose audience lacks `system` (ContactInfo/Change) is proposed to no system contact (SPEC §10)."""
    assert "system" not in catalog.get("ContactInfo/Change").audience
    config = config_of(THREE_CONTACTS)
    assert await candidates_of(config, event_of("ContactInfo/Change", account="bob"), catalog) == []
    result = await plan_for(event_of("ContactInfo/Change", account="bob"), config, catalog, account("bob", "b@x.org"))
    assert delivered(result) == [("account:bob", "email", "b@x.org")]


async def test_unknown_types_reach_system_contacts(catalog: Catalog) -> None:
    """An unknown type goes out as Application/base, whose audience is the system contacts."""
    config = config_of(THREE_CONTACTS)
    result = await plan_for(event_of("Custom/Thing"), config, catalog)
    assert result.importance == Importance.LOW
    assert [d.recipient.name for d in result.deliveries] == ["root", "backups", "oncall"]


async def test_sources_are_asked_in_order(catalog: Catalog) -> None:
    """Candidates are planned in the order of the sources, so the first source keeps a shared address."""
    config = config_of("contacts: {root: {email: [shared@example.com]}}")
    event = event_of("Backup/Failure")
    sources: list[Any] = [StaticSource(account("bob", "shared@example.com")), SystemContacts()]
    result = await plan_event(event, config=config, catalog=catalog, sources=sources, channels=ALL_CHANNELS)
    assert delivered(result) == [("account:bob", "email", "shared@example.com")]
    assert suppressed(result) == [("root", "email", "shared@example.com", "duplicate of account:bob")]
