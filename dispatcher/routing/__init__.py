"""Routing: who gets an event, on which channel, at which address (SPEC §2, §3).

`importance` computes an event's effective importance, `routes` applies the config's routing rules to system
contacts, `recipients` defines recipients and their sources, and `planner` turns candidates into deliveries.
"""

from .importance import effective_importance, explain_importance
from .planner import Plan, PlannedDelivery, Suppressed, plan, plan_event
from .recipients import Candidate, Recipient, RecipientSource, SystemContacts
from .routes import select_contacts

__all__ = [
    "Candidate",
    "Plan",
    "PlannedDelivery",
    "Recipient",
    "RecipientSource",
    "Suppressed",
    "SystemContacts",
    "effective_importance",
    "explain_importance",
    "plan",
    "plan_event",
    "select_contacts",
]
