"""The configuration file (SPEC §8): YAML parsed once into frozen, typed dataclasses.

`load_config(path)` reads a file, `parse_config(text)` a string, `default_config()` gives every default and no
contacts. Problems never stop at the first one: every unknown key, wrong type and bad value is collected with the
position of the offending key or value, and `ConfigError(issues)` is raised with one `FILE:LINE:COL: message` line
each (1-based; problems with the file as a whole, such as a missing file, are `FILE: message`).

The walk works on the composed YAML node tree (`yaml.compose`) rather than on constructed Python objects, since only
the nodes remember where they came from. `null` for a key means the same as leaving the key out: its default (one
exception: `store.retention_days: null` keeps everything, while left out it is 30 days).

Secrets come from `*_file` keys (read at load, trailing whitespace stripped) or, discouraged, inline keys. They are
held in `Secret`, whose repr is `<secret>`, and no error message ever quotes a secret's value. Relative paths resolve
against the directory of the config file.

    secret.py       `Secret` and `redact_url()`: what keeps a secret out of logs and errors
    model.py        the frozen dataclasses (`Config` and its sections) and their defaults
    yaml_reader.py  `Reader` and `Map`: typed reads from YAML nodes, issues at FILE:LINE:COL
    values.py       value checks shared by several keys (addresses, URLs, topics, names)
    daemon.py       the sections bus, http, store, templates, delivery
    channels.py     the section channels (built-in settings, plugin mappings, the SMTP login rule)
    routing.py      the sections importance, contacts, routes
    load.py         `load_config`, `parse_config`, `default_config`: text to `Config`, or one ConfigError

What the rest of dispatcher uses is imported from here (`from dispatcher.config import Config`); the modules'
other names are the package's own.
"""

from .daemon import MAX_RETENTION_DAYS, MAX_SENDER_WORKERS
from .load import default_config, load_config, parse_config
from .model import (
    BUILTIN_CHANNELS,
    DEFAULT_RECEIVES,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_STORE_PATH,
    PLUGIN_GROUP,
    BusConfig,
    ChannelsConfig,
    Config,
    Contact,
    DeliveryConfig,
    EmailChannelConfig,
    HttpConfig,
    PostUrlChannelConfig,
    PushbulletChannelConfig,
    Route,
    RouteMatch,
    StoreConfig,
    TemplatesConfig,
)
from .secret import Secret, redact_url

__all__ = [
    "BUILTIN_CHANNELS",
    "DEFAULT_RECEIVES",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_STORE_PATH",
    "MAX_RETENTION_DAYS",
    "MAX_SENDER_WORKERS",
    "PLUGIN_GROUP",
    "BusConfig",
    "ChannelsConfig",
    "Config",
    "Contact",
    "DeliveryConfig",
    "EmailChannelConfig",
    "HttpConfig",
    "PostUrlChannelConfig",
    "PushbulletChannelConfig",
    "Route",
    "RouteMatch",
    "Secret",
    "StoreConfig",
    "TemplatesConfig",
    "default_config",
    "load_config",
    "parse_config",
    "redact_url",
]
