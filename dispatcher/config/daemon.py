"""The daemon's own sections: `bus` (where events come from), `http` (the API listener), `store` (the database and
how long it keeps what is finished), `templates` (the override directory) and `delivery` (the retry policy and the
sender processes)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from yaml.nodes import Node

from .model import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_STORE_PATH,
    BusConfig,
    DeliveryConfig,
    HttpConfig,
    StoreConfig,
    TemplatesConfig,
)
from .secret import redact_url
from .values import LISTEN_RE, name_without_spaces, topic
from .yaml_reader import Map, Reader

# A century: more is a typo (and past what a date can hold); null keeps everything.
MAX_RETENTION_DAYS = 36500
# Sender processes (`delivery.workers`): each is a Python process of ~40 MB; more than this is a typo.
MAX_SENDER_WORKERS = 32


def read_bus(reader: Reader, m: Map) -> BusConfig:
    url_node = m.take("url")
    url, host, port, tls = "mqtt://127.0.0.1:1883", "127.0.0.1", 1883, False
    if url_node is not None:
        parsed = _bus_url(reader, url_node, m.sub("url"))
        if parsed is not None:
            url, host, port, tls = parsed
    username = m.string("username", None)
    password, _ = m.secret("password")
    ca_file = m.get("ca_file", reader.path, None)
    ca_node = m.value_node("ca_file")
    if ca_file is not None and ca_node is not None:
        if not tls:
            reader.error(ca_node, m.sub("ca_file"), "needs an mqtts:// url")
        else:
            try:
                with ca_file.open("rb"):
                    pass
            except OSError as err:
                reader.error(ca_node, m.sub("ca_file"), f"cannot read {ca_node.value!r}: {err.strerror or err}")
    topic_prefix = m.get("topic_prefix", lambda n, p: reader.parsed(n, p, topic), "events")
    client_id = m.get("client_id", lambda n, p: reader.parsed(n, p, name_without_spaces("client id")), "dispatcher-1")
    shared_group = m.get("shared_group", lambda n, p: reader.parsed(n, p, topic), None)
    if shared_group is not None and "/" in shared_group:
        node = m.value_node("shared_group")
        assert node is not None  # its value was just read
        reader.error(node, m.sub("shared_group"), f"must not contain '/', got {shared_group!r}")
    dead_letter_topic = m.get("dead_letter_topic", lambda n, p: reader.parsed(n, p, topic), "events-dead-letter")
    # 3.1.1 unless shared subscriptions need 5: paho-mqtt spends about twice the CPU on an MQTT 5 message
    # (bench/README.md). (The growth once blamed on paho was mosquitto sending past its inflight limit into
    # aiomqtt's unbounded queue; the intake now stops reading instead, see intake/mqtt.py.)
    protocol = m.choice("protocol", "5" if shared_group is not None else "3.1.1", ("5", "3.1.1"))
    if shared_group is not None and protocol != "5":
        node = m.value_node("shared_group")
        assert node is not None  # its value was read above
        reader.error(node, m.sub("shared_group"), "shared subscriptions need protocol 5")
    m.finish()
    return BusConfig(
        url=url,
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        ca_file=ca_file,
        topic_prefix=topic_prefix,
        client_id=client_id,
        shared_group=shared_group,
        dead_letter_topic=dead_letter_topic,
        protocol=protocol,
    )


def _bus_url(reader: Reader, node: Node, path: str) -> tuple[str, str, int, bool] | None:
    text = reader.string(node, path)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        reader.error(node, path, f"bad port in {redact_url(text)!r} (expected 1 to 65535)")
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        reader.error(node, path, f"expected an mqtt:// or mqtts:// URL, got {redact_url(text)!r}")
        return None
    if parts.username is not None or parts.password is not None:
        reader.error(node, path, "credentials do not belong in the URL: use bus.username and bus.password_file")
        return None
    if not parts.hostname:
        reader.error(node, path, f"missing host in {text!r}")
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        reader.error(node, path, f"expected mqtt[s]://HOST[:PORT] with nothing after, got {redact_url(text)!r}")
        return None
    if port == 0:
        reader.error(node, path, f"bad port in {text!r} (expected 1 to 65535)")
        return None
    tls = scheme == "mqtts"
    return text, parts.hostname, port or (8883 if tls else 1883), tls


def read_http(reader: Reader, m: Map) -> HttpConfig:
    host, port = "127.0.0.1", 8470
    listen = m.take("listen")
    if listen is not None:
        text = reader.string(listen, m.sub("listen"))
        found = LISTEN_RE.match(text) if text is not None else None
        if text is not None and found is None:
            reader.error(listen, m.sub("listen"), f"expected HOST:PORT or [IPv6]:PORT, got {text!r}")
        elif found is not None:
            # Port 0 is allowed here: the OS picks a free port (tests and embedding use it).
            if int(found["port"]) > 65535:
                reader.error(listen, m.sub("listen"), f"expected a port between 0 and 65535, got {found['port']}")
            else:
                host, port = found["v6"] or found["host"], int(found["port"])
    token, token_file = m.secret("token")
    m.finish()
    return HttpConfig(listen_host=host, listen_port=port, token=token, token_file=token_file)


def read_store(m: Map) -> StoreConfig:
    """`path` (an SQLite file, the default) or `url` (a PostgreSQL database), not both."""
    path = m.get("path", m.reader.path, None)
    url = m.get("url", lambda node, key: m.reader.parsed(node, key, _store_url), None)
    if path is not None and url is not None:
        node = m.value_node("url")
        assert node is not None  # its value was just read
        m.reader.error(node, m.sub("url"), "give either path (an SQLite file) or url (a PostgreSQL database), not both")
    if url is None and path is None:
        path = DEFAULT_STORE_PATH
    # The one key whose null is not its default: `retention_days: null` keeps everything, as `max_attempts: null`
    # sets no limit. Left out, it is 30 days.
    retention_days: int | None = DEFAULT_RETENTION_DAYS
    if "retention_days" in m.entries:
        retention_days = m.get(
            "retention_days", lambda node, path: m.reader.integer(node, path, 1, MAX_RETENTION_DAYS), None
        )
        if retention_days is None and m.value_node("retention_days") is not None:
            retention_days = DEFAULT_RETENTION_DAYS  # a bad value, already reported
    m.finish()
    return StoreConfig(path=None if url is not None else path, url=url, retention_days=retention_days)


def _store_url(text: str) -> str:
    """A libpq URL of a PostgreSQL database (`postgresql://user@host:port/db`), without a password: a secret belongs
    in a file, which libpq reads (`?passfile=…`, in the format of ~/.pgpass)."""
    try:
        parts = urlsplit(text)
        # libpq takes several hosts, each with its port (`db1:5432,db2:5433`: a replicated database)
        for host in parts.netloc.rpartition("@")[2].split(","):
            urlsplit(f"//{host}").port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"bad host or port in {redact_url(text)!r}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"expected a postgresql:// URL, got {redact_url(text)!r}")
    if parts.password is not None or any(key == "password" for key, _ in parse_qsl(parts.query)):
        raise ValueError(
            "a password does not belong in the URL: give libpq a password file (?passfile=/etc/dispatcher/pgpass,"
            " in the format of ~/.pgpass)"
        )
    return text


def read_templates(reader: Reader, m: Map) -> TemplatesConfig:
    directory = m.get("dir", reader.path, None)
    if directory is not None and not directory.is_dir():
        node = m.value_node("dir")
        assert node is not None  # its value was just read
        reader.error(node, m.sub("dir"), f"{node.value!r} is not a directory")
    m.finish()
    return TemplatesConfig(dir=directory)


def read_delivery(reader: Reader, m: Map) -> DeliveryConfig:
    config = DeliveryConfig(
        max_attempts=m.get("max_attempts", lambda node, path: reader.integer(node, path, 1), None),
        backoff_initial_s=m.number("backoff_initial_s", 1.0),
        backoff_max_s=m.number("backoff_max_s", 300.0),
        give_up_after_s=m.number("give_up_after_s", 86400.0),
        workers=m.integer("workers", DeliveryConfig.workers, 0, MAX_SENDER_WORKERS),
    )
    if config.backoff_max_s < config.backoff_initial_s:
        node = m.value_node("backoff_max_s") or m.value_node("backoff_initial_s")
        assert node is not None  # the defaults are in order, so one of the two is written
        reader.error(node, m.sub("backoff_max_s"), f"must be at least backoff_initial_s ({config.backoff_initial_s:g})")
    m.finish()
    return config
