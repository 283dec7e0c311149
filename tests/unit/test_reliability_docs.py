"""Meta-test: every test the reliability fault table (``docs/reliability.md``) names exists, and every case of that
table's test files is named there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
#: The test files that hold this table's cases; each of their tests must be in the table.
TABLE_FILES = (
    "tests/unit/test_run_folder.py",
    "tests/unit/test_clear_inputs.py",
    "tests/unit/test_lora_fit.py",
    "tests/unit/test_precompute_inputs.py",
    "tests/unit/test_storage_faults.py",
    "tests/integration/test_run_safety.py",
)


def _table() -> str:
    return DOC.read_text().split("## Fault table", 1)[1]


def _named() -> set[str]:
    return {name.split("[", 1)[0] for name in re.findall(r"`(test_[a-z0-9_]+(?:\[[^\]]+\])?)`", _table())}


def _defined(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in re.findall(r"^def (test_\w+)\(", path.read_text(), flags=re.M)}


def test_every_test_the_fault_table_names_exists() -> None:
    missing = _named() - _defined(sorted((REPO / "tests").rglob("test_*.py")))
    assert missing == set()


def test_every_case_of_the_fault_tables_test_files_is_in_the_table() -> None:
    unlisted = _defined([REPO / name for name in TABLE_FILES]) - _named()
    assert unlisted == set()
