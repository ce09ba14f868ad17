"""The config's noise settings (SPEC §8a): `repeats:` and a contact's `quiet_hours:` read into typed values.

The bad cases are data files beside the others (`testdata/config/bad/repeats.yaml`, `bad/quiet_hours.yaml`, each
with its `.expected` FILE:LINE:COL lines), run by test_config.py; this file checks what a good file means, and the
reload's view of it.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import time
from pathlib import Path

import pytest

from dispatcher.config import RouteMatch, load_config, parse_config
from dispatcher.errors import ConfigError
from dispatcher.levels import Importance
from dispatcher.noise.quiet_hours import QuietHours
from dispatcher.noise.repeats import DEFAULT_KEY, RepeatRule

TESTDATA = Path(__file__).resolve().parent / "testdata" / "config"


def test_repeats_and_quiet_hours_load_as_written() -> None:
    """good/noise.yaml: three repeat rules (the third with the default key and no match: every event), root's
    quiet hours on Pushbullet with `except: high` (an unquoted 22:00, which YAML 1.1 reads as a number, is still a
    time), ops's on every channel with seconds in `from`."""
    config = load_config(TESTDATA / "good" / "noise.yaml")
    assert config.repeats == (
        RepeatRule(match=RouteMatch(type="Quota/*"), interval_s=14400.0, key=("type", "account")),
        RepeatRule(match=RouteMatch(app="Backup", host="web[12].*"), interval_s=0.5, key=("app", "host", "data.error")),
        RepeatRule(match=RouteMatch(), interval_s=600.0, key=DEFAULT_KEY),
    )
    assert config.contacts["root"].quiet_hours == QuietHours(
        start=time(22),
        end=time(7),
        timezone="Europe/Berlin",
        channels=frozenset({"pushbullet"}),
        except_=Importance.HIGH,
    )
    assert config.contacts["ops"].quiet_hours == QuietHours(start=time(23, 30, 15), end=time(6), timezone="UTC")


def test_without_the_keys_there_is_no_noise_control() -> None:
    """No `repeats:`, no `quiet_hours:`: nothing is suppressed or held back."""
    config = parse_config("contacts: {root: {email: [root@example.com]}}\n")
    assert config.repeats == ()
    assert config.contacts["root"].quiet_hours is None


def test_a_changed_quiet_hours_makes_a_different_config() -> None:
    """Two configs that differ only in a contact's quiet hours are not equal (a reload applies the change)."""
    base = "contacts: {root: {email: [root@example.com], quiet_hours: {from: '22:00', to: '07:00', timezone: %s}}}\n"
    assert parse_config(base % "UTC") == parse_config(base % "UTC")
    assert parse_config(base % "UTC") != parse_config(base % "Europe/Berlin")


def test_an_unknown_channel_in_quiet_hours_names_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            "contacts:\n  root:\n    email: [root@example.com]\n"
            "    quiet_hours: {from: '22:00', to: '07:00', timezone: UTC, channels: [sms]}\n",
            source="c.yaml",
        )
    assert err.value.issues == [
        "c.yaml:4:73: contacts.root.quiet_hours.channels[0]: unknown channel 'sms' (expected one of: email, "
        "pushbullet, posturl)"
    ]


def test_check_config_reports_noise_problems_with_their_position(tmp_path: Path) -> None:
    """`dispatcher check-config` prints each problem of the noise settings as FILE:LINE:COL and exits 1."""
    path = tmp_path / "d.yaml"
    path.write_text(
        "repeats:\n  - match: {type: 'Quota/*'}\n    interval_s: 0\n"
        "contacts:\n  root:\n    email: [root@example.com]\n    quiet_hours: {from: '22:00', to: '07:00'}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}:3:17: repeats[0].interval_s: expected a positive number, got 0",
        f"{path}:7:18: contacts.root.quiet_hours: missing required key 'timezone'",
    ]
