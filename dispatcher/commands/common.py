"""What the subcommands share: the `-c FILE` option, loading the config, `--data K=V` parsing."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import Config, default_config, load_config
from ..errors import UsageError


def add_config_option(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", required=required, help="the YAML configuration file")


def config_from(args: argparse.Namespace) -> Config:
    """The config named by `-c`, or the built-in defaults when the command allows none."""
    return load_config(args.config) if args.config else default_config()


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="K=V",
        action="append",
        default=[],
        help="a data field (repeatable); V is read as JSON when it parses (numbers, true, lists), else as a string",
    )


def parse_data(pairs: list[str]) -> dict[str, Any]:
    """`["domain=example.com", "days=3"]` → `{"domain": "example.com", "days": 3}`."""
    data: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--data expects K=V, got {pair!r}")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    return data
