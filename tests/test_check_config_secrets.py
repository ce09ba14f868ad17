"""No SMTP password in clear: a login (`username`) over `security: none` is refused unless the server is loopback.

`check-config`, `run` and a reload all go through `load_config`, so all three refuse such a file, with a
`FILE:LINE:COL` line pointing at the key to change and saying what to do, and never the password itself.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.config import load_config, parse_config
from dispatcher.errors import ConfigError

PASSWORD = "s3cret-smtp-pw-TOPSECRET"


def write_config(tmp_path: Path, email: str) -> Path:
    """A config whose email channel is `email` (YAML lines under `channels.email`), its password in a file."""
    (tmp_path / "smtp.password").write_text(PASSWORD + "\n")
    path = tmp_path / "dispatcher.yaml"
    path.write_text(f"hostname: test.example.com\nchannels:\n  email:\n{email}")
    return path


def dispatcher_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_config_refuses_a_clear_text_login_and_points_at_security(tmp_path: Path) -> None:
    """`security: none` written out with a username and password to a remote server: exit 1, one line at the
    `security` value saying to use starttls or tls, and the password nowhere in the output."""
    config = write_config(
        tmp_path,
        "    host: smtp.example.com\n"
        "    port: 587\n"
        "    security: none\n"
        "    username: mailer\n"
        "    password_file: smtp.password\n",
    )
    result = dispatcher_cli("check-config", "-c", str(config))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{config}:6:15: channels.email.security: an SMTP login with security: none")
    assert "smtp.example.com" in lines[0] and "use security: starttls" in lines[0] and "tls (port 465)" in lines[0]
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_without_security_the_error_points_at_username(tmp_path: Path) -> None:
    """`security` left out means none: the line points at `username`, the key that asks for a login."""
    config = write_config(tmp_path, "    host: 192.0.2.25\n    username: mailer\n    password: inline-TOPSECRET\n")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    [issue] = err.value.issues
    assert issue.startswith(f"{config}:5:15: channels.email.username: an SMTP login with security: none")
    assert "192.0.2.25" in issue and "TOPSECRET" not in issue


def test_a_username_without_a_password_is_refused_too(tmp_path: Path) -> None:
    """A username alone still logs in (with an empty password), so it is refused the same way."""
    with pytest.raises(ConfigError, match=r"channels\.email\.username: an SMTP login with security: none"):
        parse_config("channels:\n  email: {host: mail.example.net, username: mailer}\n")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.10.20.30", "::1", "localhost", "LocalHost.", "::ffff:127.0.0.1"])
def test_a_loopback_server_may_take_a_login_in_clear(tmp_path: Path, host: str) -> None:
    """A local relay (127.0.0.0/8, ::1, localhost) never puts the password on the network: allowed."""
    config = write_config(
        tmp_path, f"    host: '{host}'\n    security: none\n    username: mailer\n    password_file: smtp.password\n"
    )
    email = load_config(config).channels.email
    assert (email.host, email.security, email.username) == (host, "none", "mailer")


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_remote_login_over_tls_is_fine(tmp_path: Path, security: str) -> None:
    """With `starttls` or `tls` the login is encrypted: check-config accepts it."""
    config = write_config(
        tmp_path,
        f"    host: smtp.example.com\n    security: {security}\n    username: mailer\n"
        "    password_file: smtp.password\n",
    )
    assert load_config(config).channels.email.security == security


def test_no_login_to_a_remote_server_in_clear_is_fine() -> None:
    """No username, no login: plain SMTP to a remote relay stays allowed (port 25 between servers)."""
    assert parse_config("channels:\n  email: {host: mx.example.com, security: none}\n").channels.email.username is None


def test_a_bad_security_value_is_one_error_not_two() -> None:
    """A misspelt `security` is reported once, as a bad value, not again as a clear-text login."""
    with pytest.raises(ConfigError) as err:
        parse_config("channels:\n  email: {host: smtp.example.com, security: ssl, username: u}\n", source="c.yaml")
    assert err.value.issues == ["c.yaml:2:45: channels.email.security: expected one of none, starttls, tls, got 'ssl'"]


def test_run_refuses_it_before_starting(tmp_path: Path) -> None:
    """`dispatcher run` with such a file exits 1 with the same line, before it opens the store or the bus."""
    email = "    host: smtp.example.com\n    username: mailer\n    password_file: smtp.password\n"
    config = write_config(tmp_path, email)
    result = dispatcher_cli("run", "-c", str(config))
    assert result.returncode == 1
    assert f"{config}:5:15: channels.email.username: an SMTP login with security: none" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert not (tmp_path / "dispatcher.db").exists()


async def test_a_reload_refuses_it_and_keeps_the_old_config(
    make_config: Callable[..., Path], start_daemon: Any, tmp_path: Path
) -> None:
    """SIGHUP's reload refuses the clear-text login; the running config (no login) stays."""
    config = make_config()
    daemon = await start_daemon(config)
    (tmp_path / "smtp.password").write_text(PASSWORD + "\n")
    document = yaml.safe_load(config.read_text())
    document["channels"] = {
        "email": {"host": "smtp.example.com", "username": "mailer", "password_file": "smtp.password"}
    }
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    assert not await daemon.dispatcher.reload(config)
    assert daemon.dispatcher.config.channels.email.username is None
