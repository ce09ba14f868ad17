"""The `channels` section: the built-in channels' settings (email, pushbullet, posturl) and each installed plugin's
mapping, passed through as written. Refuses an SMTP login that would cross the network in clear."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .model import ChannelsConfig, EmailChannelConfig, PostUrlChannelConfig, PushbulletChannelConfig
from .values import from_address, http_url, name_without_spaces
from .yaml_reader import Map, Reader, describe, is_null


def read_channels(reader: Reader, m: Map, hostname: str) -> ChannelsConfig:
    email = _read_email(reader, reader.mapping(m.take("email"), m.sub("email")), hostname)
    pm = reader.mapping(m.take("pushbullet"), m.sub("pushbullet"))
    pushbullet = PushbulletChannelConfig(
        api_url=pm.get(
            "api_url",
            lambda n, p: reader.parsed(n, p, lambda t: http_url(t, secret=False)),
            "https://api.pushbullet.com",
        ).rstrip("/"),
        timeout_s=pm.number("timeout_s", 10.0),
        concurrency=pm.integer("concurrency", 4, 1),
    )
    pm.finish()
    um = reader.mapping(m.take("posturl"), m.sub("posturl"))
    posturl = PostUrlChannelConfig(
        timeout_s=um.number("timeout_s", 10.0),
        format=um.choice("format", "form", ("form", "json")),
        concurrency=um.integer("concurrency", 32, 1),
    )
    um.finish()
    plugins: dict[str, Mapping[str, Any]] = {}
    for key, _, node in m:
        if key in m.known:
            continue
        if key not in reader.plugin_channels():
            m.unknown(key, also="an installed channel plugin")
            continue
        value = {} if is_null(node) else reader.raw(node, m.sub(key))
        if not isinstance(value, dict):
            if value is not None:
                reader.error(node, m.sub(key), f"expected a mapping, got {describe(node)}")
            continue
        plugins[key] = MappingProxyType(value)
    return ChannelsConfig(email=email, pushbullet=pushbullet, posturl=posturl, plugins=MappingProxyType(plugins))


def _read_email(reader: Reader, m: Map, hostname: str) -> EmailChannelConfig:
    host = m.get("host", lambda n, p: reader.parsed(n, p, name_without_spaces("host name")), "127.0.0.1")
    security = m.choice("security", "none", ("none", "starttls", "tls"))
    # Implicit TLS on port 25 never works, so `security: tls` alone means the submissions port.
    port = m.integer("port", 465 if security == "tls" else 25, 1, 65535)
    username = m.string("username", None)
    password, _ = m.secret("password")
    config = EmailChannelConfig(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        from_addr=m.get("from", lambda n, p: reader.parsed(n, p, from_address), f"dispatcher@{hostname}"),
        timeout_s=m.number("timeout_s", 30.0),
        concurrency=m.integer("concurrency", 8, 1),
    )
    if config.password is not None and config.username is None:
        node = m.value_node("password") or m.value_node("password_file")
        assert node is not None  # a password was read from one of them
        reader.error(node, m.sub("password"), "needs a username")
    security_node = m.value_node("security")
    # `security` as written (not a bad value already reported, which reads as the default "none").
    plain = security_node is None or getattr(security_node, "value", None) == "none"
    if config.username is not None and plain and not _is_loopback(config.host):
        # A login (aiosmtplib logs in whenever a username is set, with an empty password if none is given) over a
        # plain connection puts the password on the wire in clear: refused, as Alertmanager requires TLS by default.
        # The error points at `security` when it is written out, since that is the line to change.
        key = "security" if security_node is not None else "username"
        node = m.value_node(key)
        assert node is not None  # security is written, or else the username was read
        reader.error(
            node,
            m.sub(key),
            f"an SMTP login with security: none would send the password in clear to {config.host}; use security:"
            " starttls (usually port 587) or tls (port 465), or a loopback host (127.0.0.1, ::1, localhost)",
        )
    m.finish()
    return config


def _is_loopback(host: str) -> bool:
    """Whether `host` names this machine by a loopback address or `localhost`: traffic to it never leaves the box."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
