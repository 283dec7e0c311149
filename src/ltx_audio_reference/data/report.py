"""The build report: kept and dropped counts with reasons, the target-pitch histogram, Pearson r, and its plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ltx_audio_reference.data.pairs import DROP_REASONS
from ltx_audio_reference.data.recipe import Recipe
from ltx_audio_reference.reliability.files import atomic_file


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded to ``digits``, or None."""
    return None if value is None else round(float(value), digits)


def pearson_r(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation, or None with fewer than 3 points or no variance."""
    if len(x) < 3:
        return None
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": round(float(array.min()), 3),
        "max": round(float(array.max()), 3),
        "mean": round(float(array.mean()), 3),
        "median": round(float(np.median(array)), 3),
    }


def summarize(records: list[dict[str, Any]], recipe: Recipe, bin_hz: float = 10.0) -> dict[str, Any]:
    """The build report: counts and reasons, the target-pitch histogram and source/target correlation."""
    kept = [r for r in records if r.get("status") == "kept"]
    dropped = [r for r in records if r.get("status") != "kept"]
    source = [r["source_f0_hz"] for r in kept]
    target = [r["target_f0_hz"] for r in kept]
    measured = [r["measured_f0_hz"] for r in kept]
    shifts = [r["shift_semitones"] for r in kept]
    histogram: dict[str, list[float]] = {"bin_edges_hz": [], "counts": []}
    if target:
        low = math.floor(min(target) / bin_hz) * bin_hz
        high = max(low + bin_hz, math.ceil(max(target) / bin_hz) * bin_hz)
        counts, edges = np.histogram(target, bins=np.arange(low, high + bin_hz / 2, bin_hz))
        histogram = {"bin_edges_hz": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}
    r = pearson_r(source, target)
    return {
        "recipe": recipe.name,
        "target_kind": recipe.target.kind,
        "caption": recipe.caption,
        "tolerance_hz": recipe.tolerance_hz,
        "clips": len(records),
        "kept": len(kept),
        "dropped": len(dropped),
        "dropped_by_reason": {reason: sum(r.get("reason") == reason for r in dropped) for reason in DROP_REASONS},
        "drop_reasons": DROP_REASONS,
        "drops": [{"clip": r["clip"], "reason": r["reason"], "detail": r.get("detail", "")} for r in dropped],
        "pearson_r_source_target": None if r is None else round(r, 4),
        "pearson_r_source_measured": rounded(pearson_r(source, measured), 4),
        "source_f0_hz": _stats(source),
        "target_f0_hz": _stats(target),
        "shift_semitones": _stats(shifts),
        "abs_error_hz": _stats([abs(m - t) for m, t in zip(measured, target, strict=True)]),
        "target_histogram": histogram,
    }


def plot_report(report: dict[str, Any], records: list[dict[str, Any]], path: Path) -> Path:
    """Draw the report: target-pitch histogram, source vs target pitch, and kept/dropped counts."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    kept = [r for r in records if r.get("status") == "kept"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    hist = report["target_histogram"]
    if hist["counts"]:
        edges = hist["bin_edges_hz"]
        axes[0].bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="#3b75af", edgecolor="white")
    axes[0].set(title="Target pitch", xlabel="Hz", ylabel="pairs")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))

    axes[1].scatter([r["source_f0_hz"] for r in kept], [r["target_f0_hz"] for r in kept], s=10, alpha=0.7)
    r_value = report["pearson_r_source_target"]
    r_text = "n/a" if r_value is None else f"{r_value:.3f}"
    axes[1].set(title=f"Source vs target pitch (Pearson r = {r_text})", xlabel="source Hz", ylabel="target Hz")

    labels = ["kept", *report["dropped_by_reason"]]
    values = [report["kept"], *report["dropped_by_reason"].values()]
    colors = ["#4c9a2a"] + ["#c0392b"] * (len(labels) - 1)
    axes[2].barh(labels, values, color=colors)
    axes[2].invert_yaxis()
    axes[2].set(title=f"{report['recipe']}: {report['kept']} kept / {report['clips']} clips", xlabel="clips")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path
