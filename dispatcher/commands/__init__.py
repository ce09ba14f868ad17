"""One module per subcommand; each has `add_parser(subparsers)` which sets `handler` on its parser."""

from . import check_config, deliveries, publish, run, test

COMMANDS = [run, check_config, publish, test, deliveries]
