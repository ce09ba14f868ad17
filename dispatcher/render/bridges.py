"""The template set of an event a bridge brought in with a message of its own.

`POST /api/v1/ingest/cpanel` marks its events with `data._bridge` set to `cpanel`: they are rendered with
`Bridge/cPanel` (cPanel's subject and body in our layout) whatever their type, since their type's own templates
would look for data WHM never sends. Their importance, their recipients and the `alert` the footer names still
come from their type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events import Event

# The data key a bridge marks its events with, and the template set each bridge's events are rendered with: the
# message the bridge's sender wrote (`data.subject`, `data.body`), not the one their type's templates would write.
BRIDGE_KEY = "_bridge"
BRIDGE_TEMPLATES = {"cpanel": "Bridge/cPanel"}


def bridge_templates(data: Mapping[str, Any]) -> str | None:
    """The template set of the bridge an event with this data came through (`data._bridge` naming one of
    `BRIDGE_TEMPLATES`), None for any other event."""
    bridge = data.get(BRIDGE_KEY)
    if type(bridge) is str and bridge in BRIDGE_TEMPLATES:
        return BRIDGE_TEMPLATES[bridge]
    return None


def template_type(event: Event) -> str:
    """The template set `event` is rendered with: its bridge's (`bridge_templates`), else its type's."""
    return bridge_templates(event.data) or event.type
