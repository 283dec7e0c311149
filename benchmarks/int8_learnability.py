"""Per-step loss curves of the learnability task on each int8 backend (CPU, the stock runner, 100 steps).

The task and the run are the tier-2 test's (``tests/integration/test_int8_learnability.py``, which asserts the
thresholds): a 2-block model whose target audio is a function of the reference, trained through the stock
``LtxvTrainer`` with the base quantized by ``int8-quanto``, ``int8`` (W8A16) or ``int8-dynamic`` (W8A8), with the
reference gap probed every 50 steps. Prints the mean loss of each and its distance from ``int8``, writes every curve
to JSON and plots them.

    python benchmarks/int8_learnability.py --out benchmarks/results/int8_learnability_cpu.json \
        --plot docs/int8_learnability.png
    python benchmarks/int8_learnability.py --replot benchmarks/results/int8_learnability_cpu.json \
        --plot docs/int8_learnability.png
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_int8_learnability import STEPS, learn

from ltx_audio_reference.reliability.files import atomic_file, atomic_write_json


def plot(curves: dict[str, list[float]], path: Path) -> None:
    """Top: each backend's loss per step (10-step moving mean). Bottom: its per-step distance from ``int8``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), dpi=110, sharex=True, height_ratios=(3, 2))
    colors = {"int8-quanto": "tab:gray", "int8": "tab:blue", "int8-dynamic": "tab:orange"}
    reference = curves.get("int8")
    for name, losses in curves.items():
        steps = range(1, len(losses) + 1)
        smooth = [statistics.fmean(losses[max(0, i - 9) : i + 1]) for i in range(len(losses))]
        color = colors.get(name)
        top.plot(steps, smooth, color=color, linewidth=2, label=f"{name} (mean {statistics.fmean(losses):.4f})")
        if reference is not None and name != "int8":
            relative = [100 * (a - b) / b for a, b in zip(losses, reference, strict=True)]
            bottom.plot(steps, relative, color=color, linewidth=1.2, label=name)
    top.set_ylabel("training loss (10-step mean)")
    top.set_title("Learnability task through the stock runner on each int8 backend (CPU, 100 steps)")
    top.legend()
    top.grid(alpha=0.3)
    bottom.axhline(0.0, color="tab:blue", linewidth=1)
    bottom.set_ylabel("loss vs int8 (%)")
    bottom.set_xlabel("step")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["int8-quanto", "int8", "int8-dynamic"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--replot", type=Path, default=None, help="plot the curves of an earlier --out file only")
    args = parser.parse_args()
    if args.replot:
        rows = json.loads(args.replot.read_text())["rows"]
        plot({r["backend"]: r["losses"] for r in rows}, args.plot)
        return
    runs = {}
    with tempfile.TemporaryDirectory() as root:
        for backend in args.backends:
            runs[backend] = learn(Path(root) / backend, backend)
    curves = {b: r["losses"] for b, r in runs.items()}
    reference = statistics.fmean(curves["int8"]) if "int8" in curves else None
    rows = []
    for backend, run in runs.items():
        mean = statistics.fmean(run["losses"])
        rows.append(
            {
                "backend": backend,
                "steps": len(run["losses"]),
                "mean_loss": mean,
                "mean_vs_int8": None if reference is None else (mean - reference) / reference,
                "last10_mean_loss": statistics.fmean(run["losses"][-10:]),
                "ref_gaps": run["gaps"],
                "losses": run["losses"],
            }
        )
        sys.stdout.write(
            f"{backend:13} mean loss {mean:.5f}  vs int8 {rows[-1]['mean_vs_int8']:+.2%}  "
            f"last 10 {rows[-1]['last10_mean_loss']:.5f}  ref gaps {[round(g, 4) for g in run['gaps']]}\n"
        )
    meta = {"torch": torch.__version__, "python": platform.python_version(), "steps": STEPS, "device": "cpu"}
    if args.out:
        atomic_write_json(args.out, {"meta": meta, "rows": rows})
    if args.plot:
        plot(curves, args.plot)


if __name__ == "__main__":
    main()
