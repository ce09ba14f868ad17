"""One module per subcommand; each has `add_parser(subparsers)` which sets `handler` on its parser."""

from . import check_config, publish, run

COMMANDS = [run, check_config, publish]
