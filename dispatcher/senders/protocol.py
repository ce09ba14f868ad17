"""The frames between the daemon and a sender process.

A sender process is `python -m dispatcher.senders FD`. The socket FD carries frames both ways (4-byte length, then
a pickle; both ends are this package): the daemon sends ("init", config, catalog), ("config", config) after each
reload, and ("jobs", [(job id, start_by, job), …]); the sender answers ("ready",) once set up, then ("outcomes",
[(job id, None | (message, retryable, retry_after_s)), …]), and ("alive",) every `WATCH_INTERVAL_S`. A side
writes at most one frame per loop iteration, so a burst costs a few writes, not one per delivery. The frames
carry targets (tokens, URLs with passwords) over a socketpair only the two processes hold; nothing is logged.
"""

from __future__ import annotations

import asyncio
import copyreg
import pickle
import struct
from types import MappingProxyType
from typing import Any

# How often the daemon looks for answers overdue, and a sender process for attempts past their bound. One look a
# second for all instead of a timer each (an `asyncio.timeout` costs ~7 µs, thousands of times a second); the
# bounds are tens of seconds, so a second late is nothing.
WATCH_INTERVAL_S = 1.0

HEADER = struct.Struct(">I")


def _read_only(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(mapping)


# The config and catalog hold read-only mappings, which pickle cannot name: send them as the dicts they wrap.
copyreg.pickle(MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))


def frame_bytes(frame: Any) -> bytes:
    """`frame` as it goes on the socket: its length, then its pickle."""
    body = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))
