"""Properties of the planner over generated contacts, thresholds, importances and channels (hypothesis)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from types import MappingProxyType

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.catalog import load_catalog
from dispatcher.config import Contact, Secret, default_config
from dispatcher.events import parse_event
from dispatcher.levels import Importance, Threshold
from dispatcher.routing import Candidate, Plan, Recipient, SystemContacts, plan, plan_event

CATALOG = load_catalog()
EVENT = parse_event({"type": "Test/Event"}, topic_type=None, default_host="server1.example.com")
ALERT = CATALOG.get(EVENT.type)
CHANNELS = ("email", "pushbullet", "posturl", "sms")

# The Contact Manager's table, written out: the importances each threshold receives. Disabled is in none.
RECEIVES = {
    Threshold.NONE: set(),
    Threshold.HIGH: {Importance.HIGH},
    Threshold.MEDIUM: {Importance.HIGH, Importance.MEDIUM},
    Threshold.ALL: {Importance.HIGH, Importance.MEDIUM, Importance.LOW},
}

# A small pool, so that recipients often share an address (sometimes differing only in case).
ADDRESSES = st.sampled_from(
    ["a@example.com", "A@Example.com", "b@example.com", "tok-1", "TOK-1", "https://h.example.com/n?k=1", " ", "x"]
)
thresholds = st.sampled_from(list(Threshold))
importances = st.sampled_from(list(Importance))


@st.composite
def recipients(draw: st.DrawFn, name: str) -> Recipient:
    kind = draw(st.sampled_from(["system", "account", "client", "contact"]))
    targets = draw(st.dictionaries(st.sampled_from(CHANNELS), st.lists(ADDRESSES, max_size=3).map(tuple), max_size=4))
    limits = None
    if kind == "system":
        # Some channels left without a threshold: the planner must then treat them as `all`.
        limits = draw(st.dictionaries(st.sampled_from(CHANNELS), thresholds, max_size=4))
    return Recipient(kind=kind, name=name, targets=targets, thresholds=limits)


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[Candidate]:
    count = draw(st.integers(min_value=0, max_value=6))
    return [
        Candidate(draw(recipients(f"r{index}")), suppressed=draw(st.none() | st.just("preference off")))
        for index in range(count)
    ]


available_channels = st.frozensets(st.sampled_from(CHANNELS))


def threshold_of(recipient: Recipient, channel: str) -> Threshold | None:
    if recipient.thresholds is None:
        return None
    return recipient.thresholds.get(channel, Threshold.ALL)


def same_target(channel: str, target: str) -> tuple[str, str]:
    return (channel, target.strip().casefold() if channel == "email" else target.strip())


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), importance=importances, channels=available_channels)
def test_never_delivers_below_a_threshold_or_off_the_rules(
    candidates: list[Candidate], importance: Importance, channels: frozenset[str]
) -> None:
    """Every delivery is admitted by its channel's threshold, on an available channel, to an address it has."""
    by_name = {candidate.recipient.name: candidate for candidate in candidates}
    result = plan(EVENT, ALERT, importance, candidates, channels)
    for delivery in result.deliveries:
        candidate = by_name[delivery.recipient.name]
        assert candidate.suppressed is None
        assert delivery.channel in channels
        assert delivery.target in candidate.recipient.targets[delivery.channel]
        threshold = threshold_of(candidate.recipient, delivery.channel)
        if threshold is not None:
            assert importance in RECEIVES[threshold]
        else:
            assert importance != Importance.DISABLED


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), channels=available_channels)
def test_never_delivers_a_disabled_event(candidates: list[Candidate], channels: frozenset[str]) -> None:
    """A disabled event makes no delivery, and every candidate is listed once as `importance disabled`."""
    result = plan(EVENT, ALERT, Importance.DISABLED, candidates, channels)
    assert result.deliveries == ()
    assert [(s.recipient_name, s.channel, s.reason) for s in result.suppressed] == [
        (candidate.recipient.name, None, "importance disabled") for candidate in candidates
    ]


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), importance=importances, channels=available_channels)
def test_each_address_is_delivered_at_most_once(
    candidates: list[Candidate], importance: Importance, channels: frozenset[str]
) -> None:
    """No two deliveries share a (channel, target); email addresses are the same whatever their case."""
    result = plan(EVENT, ALERT, importance, candidates, channels)
    keys = Counter(same_target(d.channel, d.target) for d in result.deliveries)
    assert all(count == 1 for count in keys.values())


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), importance=importances, channels=available_channels)
def test_every_address_is_accounted_for(
    candidates: list[Candidate], importance: Importance, channels: frozenset[str]
) -> None:
    """Each address of each candidate is either delivered or suppressed with a reason; nothing is lost silently."""
    result = plan(EVENT, ALERT, importance, candidates, channels)
    for candidate in candidates:
        name = candidate.recipient.name
        addresses = Counter(
            (channel, target)
            for channel, targets in candidate.recipient.targets.items()
            for target in targets
            if target.strip()
        )
        whole = [s for s in result.suppressed if s.recipient_name == name and s.channel is None]
        if importance == Importance.DISABLED or candidate.suppressed is not None or not addresses:
            assert len(whole) == 1
            assert not [d for d in result.deliveries if d.recipient.name == name]
            continue
        assert whole == []
        planned = Counter((d.channel, d.target) for d in result.deliveries if d.recipient.name == name)
        planned.update((s.channel, s.target) for s in result.suppressed if s.recipient_name == name)
        assert planned == addresses


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), channels=available_channels)
def test_a_more_important_event_reaches_at_least_the_same_addresses(
    candidates: list[Candidate], channels: frozenset[str]
) -> None:
    """Raising the importance (low → medium → high) never takes an address off the plan."""

    def reached(result: Plan) -> set[tuple[str, str]]:
        return {same_target(d.channel, d.target) for d in result.deliveries}

    low, medium, high = (
        plan(EVENT, ALERT, i, candidates, channels) for i in (Importance.LOW, Importance.MEDIUM, Importance.HIGH)
    )
    assert reached(low) <= reached(medium) <= reached(high)


# -- through the config and the system contacts source ---------------------------------------------------------

EMAILS = st.sampled_from(["root@example.com", "ops@example.com", "Ops@Example.com", "dev@example.org"])
TOKENS = st.sampled_from(["tok-a", "tok-b"])


@st.composite
def contacts(draw: st.DrawFn) -> dict[str, Contact]:
    names = draw(st.lists(st.sampled_from(["root", "ops", "dev", "backup"]), unique=True, max_size=4))
    return {
        name: Contact(
            name=name,
            email=tuple(draw(st.lists(EMAILS, max_size=2))),
            pushbullet=tuple(Secret(token) for token in draw(st.lists(TOKENS, max_size=2))),
            receives=MappingProxyType({channel: draw(thresholds) for channel in ("email", "pushbullet", "posturl")}),
        )
        for name in names
    }


@settings(max_examples=150, deadline=None)
@given(people=contacts(), importance=importances)
def test_system_contacts_from_config_get_only_what_their_thresholds_admit(
    people: dict[str, Contact], importance: Importance
) -> None:
    """Through the config and `SystemContacts`: deliveries respect `receives`, and each address is sent once."""
    config = replace(
        default_config("server1.example.com"),
        importance=MappingProxyType({EVENT.type: importance}),
        contacts=MappingProxyType(people),
    )
    result = asyncio.run(
        plan_event(EVENT, config=config, catalog=CATALOG, sources=[SystemContacts()], channels={"email", "pushbullet"})
    )
    assert result.importance == importance
    for delivery in result.deliveries:
        assert importance in RECEIVES[people[delivery.recipient.name].receives[delivery.channel]]
    keys = [same_target(d.channel, d.target) for d in result.deliveries]
    assert len(keys) == len(set(keys))
    # Every address some contact would admit is reached by someone.
    admitted = {
        same_target(channel, target)
        for contact in people.values()
        for channel in ("email", "pushbullet")
        if importance in RECEIVES[contact.receives[channel]]
        for target in contact.targets(channel)
    }
    assert set(keys) == admitted
