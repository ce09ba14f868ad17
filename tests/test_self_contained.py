"""The suite runs in a plain clone with nothing beside it (issue 18): no test reads a file from outside the
repository, so none can skip for want of one; what the tests compare with the seed documents is kept in
tests/testdata/seeds/, each extract naming its source."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from . import seeds

TESTS = Path(__file__).resolve().parent


def _paths_above_the_repository(tree: ast.AST) -> list[int]:
    """Lines that climb above the repository from a file in tests/: `.parents[2]` or higher, `.parent` three times,
    or a path joined with `..` (`base / "../shared"`)."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, int)
            and node.slice.value >= 2
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and _parent_depth(node) == 3:
            lines.append(node.lineno)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    if side.value.split("/")[0] == os.pardir:
                        lines.append(node.lineno)
    return lines


def _parent_depth(node: ast.expr) -> int:
    """How many `.parent` in a row end at `node`."""
    depth = 0
    while isinstance(node, ast.Attribute) and node.attr == "parent":
        depth += 1
        node = node.value
    return depth


def test_no_test_module_reads_from_outside_the_repository() -> None:
    """No module under tests/ builds a path above the repository (`../shared/seeds` was one: the catalog's and the
    contacts' conformance tests skipped in a plain clone)."""
    found = {
        str(path.relative_to(TESTS)): lines
        for path in sorted(TESTS.rglob("*.py"))
        if (lines := _paths_above_the_repository(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert found == {}


def test_each_seed_extract_names_its_source_and_is_read() -> None:
    """Every file of tests/testdata/seeds/ opens with the seed document it was taken from, and is one the tests
    read."""
    extracts = sorted(seeds.SEED_FACTS.glob("*.yaml"))
    assert {path.name for path in extracts} == {
        "000_savecontactinfo.yaml",
        "001_contact_manager_alert_types.yaml",
        *seeds.WHMCS_SEEDS.values(),
    }
    for path in extracts:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith(f"# Facts of seed {path.name[:3]}_"), (path.name, first)
    assert len(seeds.contact_manager_alert_types()) == 114
    assert seeds.whmcs_errors("AddContact") and seeds.whmcs_errors("UpdateContact")
    assert seeds.savecontactinfo()["example_output"]["cpanelresult"]["func"] == "savecontactinfo"
