"""`python -m dispatcher.senders FD [--flag=value …]`: a sender process, as `SenderPool` starts it (see child.py)."""

import sys

from .child import main

sys.exit(main(sys.argv[1:]))
