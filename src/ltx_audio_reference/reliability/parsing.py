"""Reading YAML and JSON that mean what they say: a key written twice in one mapping is refused, naming both lines.

PyYAML and ``json`` keep the last of two equal keys without a word, so a second ``optimization:`` block pasted at the
end of a config replaces the first one whole. Every YAML file the project reads (training configs, recipes, the
``recipe.yaml`` snapshot, ``--validation`` values) goes through :func:`load_yaml`, and every JSON manifest through
:func:`load_json`. YAML merge keys (``<<: *defaults``) still override, as YAML defines them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SHOWN = 5


class TextFileError(ValueError):
    """A config or recipe file cannot be read as the user meant it; the message names the file and the fix."""


class DuplicateKeyError(TextFileError):
    """A mapping holds the same key twice; the message names every such key with both lines and how to fix it."""


def _item(path: tuple[str, ...], index: int) -> tuple[str, ...]:
    return (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",)


def _duplicates(
    loader: yaml.SafeLoader, node: yaml.Node, path: tuple[str, ...], seen: set[int]
) -> Iterator[tuple[str, int, int]]:
    """``(dotted key, first line, second line)`` for every key written twice in a mapping under ``node``."""
    if id(node) in seen:  # an alias of an anchored node: checked where it was written
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicates(loader, item, _item(path, index), seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[Any, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key: Any = None
        if isinstance(key_node, yaml.ScalarNode):
            key = loader.construct_object(key_node, deep=True)  # `1` and `1.0`, `yes` and `true` are one key
        name = str(key) if key is not None else "?"
        line = key_node.start_mark.line + 1
        if key is not None:
            if key in first_line:
                yield ".".join((*path, name)), first_line[key], line
            else:
                first_line[key] = line
        yield from _duplicates(loader, value_node, (*path, name), seen)


def load_yaml(text: str, source: str | Path = "<string>") -> Any:  # noqa: ANN401 - any YAML document
    """Parse one YAML document like ``yaml.safe_load``, refusing a key written twice in one mapping.

    Args:
        text: The YAML text.
        source: Where it came from, for the message (a file name).

    Raises:
        DuplicateKeyError: Naming each repeated key (dotted, e.g. ``optimization.steps``), the line of each
            occurrence, and the fix.
        yaml.YAMLError: If the text is not YAML.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        found = sorted(_duplicates(loader, node, (), set()), key=lambda item: (item[1], item[2]))
        if found:
            lines = [
                f"{source}: key {key!r} is written twice (lines {first} and {second}); YAML keeps only the last, so "
                f"the settings at line {first} would be ignored without a word. Keep one {key!r} (merge the two)"
                for key, first, second in found[:_SHOWN]
            ]
            if len(found) > _SHOWN:
                lines.append(f"... and {len(found) - _SHOWN} more repeated keys")
            raise DuplicateKeyError("\n".join(lines))
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Any:  # noqa: ANN401 - any YAML document
    """:func:`load_yaml` of a UTF-8 file, named in the message.

    Raises:
        TextFileError: If the file is not UTF-8 text (naming the first bad byte's line), or a key is written twice.
        yaml.YAMLError: If the text is not YAML.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TextFileError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); save it as UTF-8 (any editor's "
            "'save with encoding')"
        ) from e
    return load_yaml(text, path)


def _refuse_duplicate_members(source: str) -> Any:  # noqa: ANN401 - a json object_pairs_hook
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise DuplicateKeyError(
                    f"{source}: key {key!r} is written twice in one object; JSON readers keep only the last, so the "
                    f"first value ({result[key]!r}) would be ignored without a word. Keep one {key!r}"
                )
            result[key] = value
        return result

    return hook


def load_json(text: str, source: str | Path = "<string>") -> Any:  # noqa: ANN401 - any JSON document
    """Parse JSON like ``json.loads``, refusing a key written twice in one object.

    Raises:
        DuplicateKeyError: Naming the key and its source.
        json.JSONDecodeError: If the text is not JSON.
    """
    return json.loads(text, object_pairs_hook=_refuse_duplicate_members(str(source)))
