"""The docs: every relative link and anchor resolves, the README stays a user's page, and the code is documented.

Anchors follow GitHub's rule: a heading's text, lower-cased, with everything but letters, digits, spaces, hyphens and
underscores removed, spaces turned into hyphens, and ``-1``, ``-2`` ... appended to repeats.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Markdown files a link may point into (their anchors are checked too).
LINKABLE = {p.resolve() for p in (*PAGES, *REPO.glob("*/README.md"), REPO / "CHANGELOG.md")}

_LINK = re.compile(r"(?<!`)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links there are not links)."""
    return _CODE.sub("", _FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for every heading of a Markdown file."""
    seen: dict[str, int] = {}
    result = set()
    for line in _FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> list[str]:
    """Every relative link target in a page's prose (web links and mail addresses left out)."""
    targets = _LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page.resolve()
        if not destination.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor:
            if destination not in LINKABLE and destination.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(destination):
                broken.append(f"{target}: no heading gives #{anchor}")
    assert broken == [], f"{page.relative_to(REPO)}: {broken}"


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A title\n\n## Two words\n\n[ok](#two-words) [bad](#three-words) [gone](other.md) `[code](x.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n[web](https://example.com)\n"
    )
    assert anchors(page) == {"a-title", "two-words"}
    assert links(page) == ["#two-words", "#three-words", "other.md"]


def test_the_readme_is_a_users_page_of_at_most_200_lines() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings[:4] == [
        "## Install",
        "## A 5-minute demo",
        "## Train on your own clips",
        "## Use the LoRA in ComfyUI",
    ]
    assert "tests/unit" not in readme  # developer matters live in docs/development.md


def test_every_docs_page_is_linked_from_the_readme_and_the_index() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    index = (REPO / "docs" / "README.md").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        if page.name == "README.md":
            continue
        assert f"(docs/{page.name}" in readme, page.name
        assert f"({page.name})" in index, page.name


def test_every_strategy_and_block_swap_key_is_in_the_configuration_reference() -> None:
    from ltx_audio_reference.blockswap.config import BlockSwapConfig  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415

    reference = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", reference, flags=re.MULTILINE)}
    assert set(AudioReferenceConfig.model_fields) <= rows
    assert {f"block_swap.{name}" for name in BlockSwapConfig.model_fields} <= rows
    from ltx_audio_reference.blockswap import plugin as block_swap  # noqa: PLC0415
    from ltx_audio_reference.quantization import plugin as quantization  # noqa: PLC0415
    from ltx_audio_reference.registry import ConfigFieldRegistry  # noqa: PLC0415

    registry = ConfigFieldRegistry()
    block_swap.register_config_fields(registry)
    quantization.register_config_fields(registry)
    assert {f"{e.owner}.{e.name}" for e in registry if e.owner == "acceleration"} <= rows


def test_the_fault_table_page_has_its_name() -> None:
    # Other work adds rows to docs/reliability.md by that name.
    reliability = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert "## Faults tried" in reliability
    assert "### Tool faults" in reliability


#: The page that documents each command's options (the others: docs/configuration.md).
_OPTION_PAGES = {
    "build-dataset": "data.md",
    "preprocess": "data.md",
    "precompute": "data.md",
    "inspect": "evaluation.md",
    "eval": "evaluation.md",
}


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(path, command)]
    return [found for name, sub in subcommands.items() for found in _commands(sub, (*path, name))]


def test_every_cli_option_is_on_its_commands_page() -> None:
    import typer.main  # noqa: PLC0415

    from ltx_audio_reference.cli import build_app  # noqa: PLC0415

    commands = _commands(typer.main.get_command(build_app()))
    assert {path[-1] for path, _ in commands} >= {"train", "check", "demo", "eval", "build-dataset", "precompute"}
    missing = []
    for path, command in commands:
        page = REPO / "docs" / _OPTION_PAGES.get(path[-1], "configuration.md")
        text = page.read_text(encoding="utf-8")
        for param in command.params:
            missing += [(" ".join(path), o, page.name) for o in param.opts if o.startswith("--") and o not in text]
    assert [m for m in missing if m[1] != "--help"] == []


def test_every_test_the_docs_name_exists() -> None:
    tests = sorted((REPO / "tests").rglob("*.py"))
    defined = {n for p in tests for n in re.findall(r"^\s*def (test_\w+)\(", p.read_text(encoding="utf-8"), re.M)}
    files = {p.name for p in tests}
    named, named_files = set(), set()
    for page in (*PAGES, *REPO.glob("*/README.md")):
        text = page.read_text(encoding="utf-8")
        named |= set(re.findall(r"`(?:[\w/]+\.py::)?(test_[a-z0-9_]+)(?:\[[^\]`]*\])?`", text))
        named_files |= set(re.findall(r"\b(test_[a-z0-9_]+\.py)\b", text))
    assert len(named) > 20
    assert named - defined == set()
    assert named_files - files == set()
