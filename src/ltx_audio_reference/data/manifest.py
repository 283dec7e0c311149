"""Reading dataset manifests (ltx-trainer's preprocessing format): CSV, a JSON list of objects, or JSON Lines.

``build-dataset`` reads its input clips from one and ``precompute`` its references. A column or key written twice
is refused (``csv.DictReader`` and ``json`` would keep the last one without a word), as is a JSON file that is not
a list of objects.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ltx_audio_reference.reliability.parsing import DuplicateKeyError, load_json

MANIFEST_SUFFIXES = (".csv", ".json", ".jsonl")


class ManifestError(ValueError):
    """A manifest cannot be read as rows; the message names the file and the fix."""


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``.csv``, ``.json`` or ``.jsonl`` manifest, as dicts.

    Raises:
        ManifestError: If the file is not valid for its suffix, repeats a column or key, or (JSON) is not a list of
            objects.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text))
            repeated = [name for name, count in Counter(reader.fieldnames or []).items() if count > 1]
            if repeated:
                raise ManifestError(
                    f"{path}: column {repeated[0]!r} is written twice in the header; a CSV reader keeps only the last "
                    "one's values without a word. Rename or remove one of them"
                )
            return list(reader)
        if suffix == ".json":
            rows = load_json(text, path)
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise ManifestError(f"{path}: a JSON manifest must hold a list of objects")
            return rows
        rows = [load_json(line, f"{path}, line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    except DuplicateKeyError as e:
        raise ManifestError(str(e)) from e
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from e
    if not all(isinstance(row, dict) for row in rows):
        raise ManifestError(f"{path}: every line of a JSON Lines manifest must hold one object")
    return rows
