"""dispatcher: an event-driven notification dispatcher for hosting servers."""

__version__ = "0.1.0"
