"""The facts of the seed documents (the product's sources, kept outside this repository) that the tests compare
against, read from the extracts in tests/testdata/seeds/: a plain clone runs every test with nothing beside it.

Each extract names its seed document at its top. The seeds are:

- 000 cPanel API 2 `CustInfo::savecontactinfo`: `savecontactinfo()`;
- 001 WHM Contact Manager, its table of alert types: `contact_manager_alert_types()`;
- 002 WHMCS API `UpdateContact` and 003 `AddContact`: `whmcs_errors(action)`.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SEED_FACTS = Path(__file__).parent / "testdata" / "seeds"


@cache
def _parsed(name: str) -> Any:
    return yaml.safe_load((SEED_FACTS / name).read_text(encoding="utf-8"))


def _load(name: str) -> Any:
    """An extract, parsed once; each caller gets its own copy."""
    return copy.deepcopy(_parsed(name))


def savecontactinfo() -> dict[str, Any]:
    """Seed 000: `parameters` (name, type, default, in the table's order), `example_call` (the WHM API URL) and
    `example_output` (the `cpanelresult` example)."""
    facts: dict[str, Any] = _load("000_savecontactinfo.yaml")
    return facts


def contact_manager_alert_types() -> list[dict[str, Any]]:
    """Seed 001: the table's rows in order, each `alert_type`, `event` (plain text) and `templates` (file paths)."""
    rows: list[dict[str, Any]] = _load("001_contact_manager_alert_types.yaml")["alert_types"]
    return rows


WHMCS_SEEDS = {"UpdateContact": "002_whmcs_updatecontact.yaml", "AddContact": "003_whmcs_addcontact.yaml"}


def whmcs_errors(action: str) -> list[str]:
    """Seeds 002 (UpdateContact) and 003 (AddContact): the error texts of "Error Responses", in order."""
    facts = _load(WHMCS_SEEDS[action])
    assert facts["action"] == action
    return list(facts["errors"])
