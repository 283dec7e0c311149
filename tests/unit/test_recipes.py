"""Tier 1: the recipe model (every recipe file validates; validators say how to fix) and the target-pitch draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ltx_audio_reference.data.recipe import (
    MAX_BOUNDED_SEMITONES,
    MEASURABLE_MARGIN_SEMITONES,
    AnalysisConfig,
    BoundedTarget,
    DecorrelatedTarget,
    Recipe,
    RecipeError,
    builtin_recipes,
    clip_seed,
    draw_target,
    load_recipe,
)

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def _recipe(kind: str = "decorrelated", **changes: object) -> dict:
    data = yaml.safe_load((REPO / "recipes" / "helium" / f"{kind}.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return data


def test_the_helium_recipes_exist() -> None:
    names = {p.relative_to(REPO / "recipes").as_posix() for p in RECIPES}
    assert {"helium/bounded.yaml", "helium/decorrelated.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_recipe_file_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.caption == "A person speaks."
    assert recipe.tolerance_hz == 30.0
    assert recipe.tone.duration_s == 2.0


def test_recipes_are_indexed_in_the_readme() -> None:
    readme = (REPO / "recipes" / "README.md").read_text()
    for path in RECIPES:
        assert path.relative_to(REPO / "recipes").as_posix() in readme


def test_helium_targets() -> None:
    bounded = load_recipe(REPO / "recipes" / "helium" / "bounded.yaml").target
    decorrelated = load_recipe(REPO / "recipes" / "helium" / "decorrelated.yaml").target
    assert isinstance(bounded, BoundedTarget)
    assert bounded.max_semitones <= MAX_BOUNDED_SEMITONES
    assert isinstance(decorrelated, DecorrelatedTarget)
    assert (decorrelated.low_hz, decorrelated.high_hz, decorrelated.scale) == (76.0, 353.0, "linear")


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        ("bounded", {"target__max_semitones": 8.0}, "set max_semitones to 7 or less"),
        ("bounded", {"target__min_semitones": 6.0, "target__max_semitones": 5.0}, "lower min_semitones"),
        ("decorrelated", {"target__low_hz": 300.0, "target__high_hz": 200.0}, "swap or widen them"),
        ("decorrelated", {"target__high_hz": 600.0}, "raise analysis.pitch_ceiling_hz"),
        ("decorrelated", {"target__low_hz": 62.0}, "measurable range [67.3, 445.4] Hz"),
        ("bounded", {"analysis__pitch_ceiling_hz": 70.0}, "no pitch is measurable"),
        ("decorrelated", {"analysis__pitch_floor_hz": 600.0}, "lower the floor or raise the ceiling"),
        ("decorrelated", {"tone__vibrato_rate_hz": [7.0, 4.0]}, "swap the two values"),
        ("decorrelated", {"tone__jitter_percent": [-1.0, 1.0]}, "raise its low end"),
        ("decorrelated", {"output__manifest": "dataset.parquet"}, "must end in one of"),
        ("decorrelated", {"output__clips_dir": "../elsewhere"}, "relative path inside --output"),
        ("decorrelated", {"target__kind": "random"}, "does not match any of the expected tags"),
        ("decorrelated", {"tolerance": 30}, "Extra inputs are not permitted"),
        ("decorrelated", {"tone__duration": 2}, "Extra inputs are not permitted"),
    ],
)
def test_validators_say_how_to_fix(kind: str, changes: dict, message: str, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(kind, **changes)))
    with pytest.raises(RecipeError, match="invalid recipe") as info:
        load_recipe(path)
    assert message in str(info.value)


def test_shipped_recipes_load_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside the clone: the docs' relative path would not exist here
    assert set(builtin_recipes()) == {"helium/bounded", "helium/decorrelated"}
    by_name = load_recipe("helium/decorrelated")
    assert by_name == load_recipe("recipes/helium/decorrelated.yaml")
    assert by_name == load_recipe(REPO / "recipes" / "helium" / "decorrelated.yaml")
    assert load_recipe("helium/bounded").name != by_name.name
    (tmp_path / "helium").mkdir()
    (tmp_path / "helium" / "decorrelated.yaml").write_text(yaml.safe_dump(_recipe(caption="A local copy.")))
    assert load_recipe("helium/decorrelated.yaml").caption == "A local copy."  # a file given as a path wins


def test_the_wheel_ships_the_recipes() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '[tool.hatch.build.targets.wheel.force-include]\n"recipes" = "ltx_audio_reference/recipes"' in pyproject


def test_missing_and_broken_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"no such recipe file.*shipped ones: helium/bounded, helium/decorrelated"):
        load_recipe(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("target: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")


def test_bounded_draws_never_exceed_seven_semitones() -> None:
    target = BoundedTarget(kind="bounded", min_semitones=0.0, max_semitones=7.0)
    for index, source in enumerate(np.geomspace(70, 400, 2000)):
        rng = np.random.default_rng(clip_seed(0, f"clip{index}", 0))
        shift = 12 * np.log2(draw_target(float(source), target, rng) / source)
        assert abs(shift) <= 7.0 + 1e-9
    up = BoundedTarget(kind="bounded", min_semitones=2.0, max_semitones=3.0, direction="up")
    shifts = [12 * np.log2(draw_target(100.0, up, np.random.default_rng(i)) / 100.0) for i in range(200)]
    assert min(shifts) >= 2.0
    assert max(shifts) <= 3.0


def test_the_measurable_range_is_two_semitones_inside_the_analysis_range() -> None:
    low, high = AnalysisConfig().measurable_range_hz
    assert MEASURABLE_MARGIN_SEMITONES == 2.0
    assert 12 * np.log2(low / 60.0) == pytest.approx(2.0)
    assert 12 * np.log2(500.0 / high) == pytest.approx(2.0)
    assert (round(low, 1), round(high, 1)) == (67.3, 445.4)


@pytest.mark.parametrize("direction", ["both", "up", "down"])
def test_bounded_draws_stay_inside_the_measurable_range_or_are_none(direction: str) -> None:
    low, high = AnalysisConfig().measurable_range_hz
    target = BoundedTarget(kind="bounded", min_semitones=1.0, max_semitones=7.0, direction=direction)
    outside = unchanged = 0
    for index, source in enumerate(np.geomspace(40.0, 700.0, 1500)):
        seed = clip_seed(0, f"clip{index}", 0)
        free = draw_target(float(source), target, np.random.default_rng(seed))
        drawn = draw_target(float(source), target, np.random.default_rng(seed), within_hz=(low, high))
        outside += not low <= free <= high
        # Whether any allowed shift (in semitones) lands inside the range.
        lowest, highest = 12 * np.log2(low / source), 12 * np.log2(high / source)
        segments = {"both": [(-7.0, -1.0), (1.0, 7.0)], "up": [(1.0, 7.0)], "down": [(-7.0, -1.0)]}[direction]
        feasible = any(max(a, lowest) <= min(b, highest) for a, b in segments)
        if drawn is None:
            assert not feasible, (source, direction)
            continue
        assert feasible, (source, direction)
        shift = 12 * np.log2(drawn / source)
        assert low - 1e-9 <= drawn <= high + 1e-9, (source, drawn)
        assert 1.0 - 1e-9 <= abs(shift) <= 7.0 + 1e-9, (source, shift)
        unchanged += drawn == free
    assert outside > 100  # the unrestricted draw leaves the range for low and high sources
    assert unchanged > 500  # and where every shift is in range the draw is the same as before


def test_bounded_draws_cover_the_feasible_shifts_uniformly() -> None:
    # A 75 Hz source may move down at most 12 log2(67.35 / 75) = -1.86 semitones: down shifts live in [-1.86, -1].
    low, high = AnalysisConfig().measurable_range_hz
    target = BoundedTarget(kind="bounded", min_semitones=1.0, max_semitones=7.0)
    shifts = np.array(
        [
            12 * np.log2(draw_target(75.0, target, np.random.default_rng(i), within_hz=(low, high)) / 75.0)
            for i in range(4000)
        ]
    )
    down = shifts[shifts < 0]
    assert down.min() >= 12 * np.log2(low / 75.0) - 1e-9
    # Uniform over the 0.86 + 6 semitones allowed: the down side gets 0.86 / 6.86 of the draws.
    assert len(down) / len(shifts) == pytest.approx(
        (12 * np.log2(75.0 / low) - 1.0) / (12 * np.log2(75.0 / low) + 5.0), abs=0.02
    )


def test_decorrelated_draws_ignore_the_source() -> None:
    target = DecorrelatedTarget(kind="decorrelated")
    draws = [draw_target(s, target, np.random.default_rng(clip_seed(5, "same", 0))) for s in (80.0, 150.0, 300.0)]
    assert draws[0] == draws[1] == draws[2]
    values = [draw_target(100.0, target, np.random.default_rng(i)) for i in range(2000)]
    assert min(values) >= 76.0
    assert max(values) <= 353.0
    assert abs(np.mean(values) - (76 + 353) / 2) < 8.0


def test_clip_streams_are_independent_of_order_and_of_each_other() -> None:
    a = np.random.default_rng(clip_seed(1, "x/y", 0)).uniform()
    assert a == np.random.default_rng(clip_seed(1, "x/y", 0)).uniform()
    assert a != np.random.default_rng(clip_seed(1, "x/y", 1)).uniform()
    assert a != np.random.default_rng(clip_seed(2, "x/y", 0)).uniform()


def test_recipe_model_rejects_unknown_fields_at_the_top() -> None:
    data = _recipe()
    data["seeds"] = 1
    with pytest.raises(ValueError, match="Extra inputs"):
        Recipe.model_validate(data)
