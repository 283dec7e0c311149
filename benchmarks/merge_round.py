"""Merge one device call's ``full_scale.py`` rows into a results file, each row renamed ``RUN@r<ROUND><CALL>``.

    python benchmarks/merge_round.py benchmarks/results/full_scale_h100.json 11 1 r11_1.json

The call's own ``meta`` goes under ``meta.round<ROUND>.call_meta.<CALL>``; a row of the same name is replaced.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger("merge_round")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the committed results file")
    parser.add_argument("round", type=int)
    parser.add_argument("call", type=int)
    parser.add_argument("rows", type=Path, help="the call's full_scale.py --out file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = json.loads(args.results.read_text())
    new = json.loads(args.rows.read_text())
    for row in new["rows"]:
        named = {**row, "name": f"{row['name']}@r{args.round}{args.call}", "round": args.round, "call": args.call}
        results["rows"] = [r for r in results["rows"] if r.get("name") != named["name"]] + [named]
        logger.info("merged %s", named["name"])
    meta = results["meta"].setdefault(f"round{args.round}", {})
    meta.setdefault("call_meta", {})[str(args.call)] = new.get("meta", {})
    args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
