"""One module per subcommand; each has `add_parser(subparsers)` which sets `handler` on its parser."""

from . import catalog, check_config, deliveries, publish, render, retry, routes, run, silence, test

COMMANDS = [run, check_config, publish, routes, render, test, catalog, deliveries, retry, silence]
