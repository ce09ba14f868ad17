"""`Message`: one rendered notification, what rendering makes (`render/`) and a channel sends (`channels/`).

A module of its own, below both: a channel (third parties write them) names it without importing the renderer, and
the renderer makes it without importing a channel. Channels import it from `dispatcher.channels` (or
`dispatcher.channels.base`), which re-export it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered notification, the same for every channel.

    `importance` is the level's label (`"high"`, `"medium"`, `"low"`); `account` is the hosting account the
    event concerns, if any. A digest (several events in one message) has every event's id in `event_ids`, in the
    order it lists them, and its first one as `event_id`; a single event's message leaves `event_ids` empty.
    """

    subject: str
    text: str
    html: str
    event_id: str
    event_type: str
    importance: str
    hostname: str
    account: str | None
    event_ids: tuple[str, ...] = ()

    @property
    def app(self) -> str:
        """The `App` half of `event_type` (`"Backup"` for `"Backup/Failure"`)."""
        return self.event_type.partition("/")[0]

    @property
    def event_name(self) -> str:
        """The `Event` half of `event_type` (`"Failure"` for `"Backup/Failure"`); empty if there is no slash."""
        return self.event_type.partition("/")[2]
