"""The `dispatcher` command: parses the command line and hands over to one module of `commands/`.

Exit status: 0 success, 1 failure, 2 bad usage. Errors are one line on stderr; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .commands import COMMANDS
from .commands.common import drop_stdout
from .errors import DispatcherError, UsageError
from .logs import configure_logging


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dispatcher", description="Event-driven notification dispatcher for hosting servers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"dispatcher {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dispatcher` script and `python -m dispatcher`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    configure_logging(debug=debug, quiet=True)  # `run` switches to the daemon's logging
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except UsageError as err:
        print(str(err), file=sys.stderr)
        return 2
    except DispatcherError as err:
        if debug:
            raise
        print(f"dispatcher: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dispatcher deliveries | head`: the reader has what it wanted
        drop_stdout()
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
