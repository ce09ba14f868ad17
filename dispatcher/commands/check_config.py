"""`dispatcher check-config -c FILE`: validate everything a reload would, print `FILE:LINE:COL: message` lines.

Warnings (`FILE:LINE:COL: warning: message`, e.g. an `importance:` key that matches no known type) are printed
too, and leave the exit status 0.
"""

from __future__ import annotations

import argparse
import sys

from ..config import load_config
from ..errors import ConfigError
from .common import SubParsers, add_config_option


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("check-config", help="validate the configuration and compile all templates")
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    warnings: tuple[str, ...] = ()
    try:
        config = load_config(args.config)
        warnings = config.warnings
        issues = check_templates(config)
    except ConfigError as err:
        issues = err.issues
    for line in (*issues, *warnings):
        print(line, file=sys.stderr)
    if issues:
        return 1
    print(f"{args.config}: OK")
    return 0


def check_templates(config: object) -> list[str]:
    """Compile every shipped and overriding template; one `FILE:LINE: message` line per broken one."""
    try:
        from ..render import check_templates as compile_all
    except ImportError:  # rendering not built yet
        return []
    from ..digests.render import check_digest_templates

    return compile_all(config) or check_digest_templates(config)  # type: ignore[arg-type]
