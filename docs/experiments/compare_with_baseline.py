"""Paired comparison of an experimental sweep (a patch in this folder) with the unpatched sweep of the same
speaker pairs, seeds and labelled samples.

python docs/experiments/compare_with_baseline.py PATCHED_DIR BASELINE_DIR [pair ...]
Each DIR holds one `<labelled>_<test>/sweep.csv` per speaker pair (the all-pairs layout of docs/RESULTS.md).
Differences are paired by (pair, labelled_per_word, simulation), over the simulations both sweeps ran; intervals
are over the pairs' mean differences. The MFCC-CNN of the two sweeps (same seed and sample, retrained) gives the
noise floor of a comparison across sweeps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from sweep_report import accuracies, interval  # noqa: E402

COMPARISONS = (  # (label, patched-or-baseline configuration, minus)
    ("patched dtw - dtw", ("patched", "spatial AE (dtw)"), ("baseline", "spatial AE (dtw)")),
    ("patched plain AE - plain AE", ("patched", "plain AE (standardised)"), ("baseline", "plain AE (standardised)")),
    ("patched dtw - patched plain AE", ("patched", "spatial AE (dtw)"), ("patched", "plain AE (standardised)")),
    ("patched dtw - MFCC-CNN", ("patched", "spatial AE (dtw)"), ("patched", "MFCC-CNN")),
    ("MFCC-CNN retrained - MFCC-CNN (noise floor)", ("patched", "MFCC-CNN"), ("baseline", "MFCC-CNN")),
)


def scores(folder: str, pairs: list[str], which: str) -> pd.Series:
    paths = [str(Path(folder) / pair / "sweep.csv") for pair in pairs]
    table = accuracies(pd.concat([pd.read_csv(path).assign(source=Path(path).parent.name) for path in paths]))
    table["which"] = which
    return table.set_index(["which", "configuration", "source", "labelled_per_word", "simulation"])["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("patched", help="folder of the patched sweep's <labelled>_<test>/sweep.csv")
    parser.add_argument("baseline", help="folder of the unpatched sweep's <labelled>_<test>/sweep.csv")
    parser.add_argument("pairs", nargs="*", help="<labelled>_<test> folders to compare (default: all the patched)")
    args = parser.parse_args()
    pairs = args.pairs or sorted(path.parent.name for path in Path(args.patched).glob("*/sweep.csv"))
    missing = [str(Path(folder) / pair / "sweep.csv") for folder in (args.patched, args.baseline) for pair in pairs
               if not (Path(folder) / pair / "sweep.csv").is_file()]
    if not pairs or missing:
        parser.error(f"no sweep.csv: {', '.join(missing) or args.patched + '/*/sweep.csv'}. "
                     "Fix: pass the results folders of the all-pairs sweeps (docs/RESULTS.md, Exact commands)")
    both = pd.concat([scores(args.patched, pairs, "patched"), scores(args.baseline, pairs, "baseline")]).sort_index()
    print(f"pairs: {', '.join(pairs)}\n\n| difference | labelled per word | simulations | mean [95% CI] over pairs |"
          "\n|---|---|---|---|")
    for name, plus, minus in COMPARISONS:
        difference = (both.loc[plus] - both.loc[minus]).dropna()
        for per_word, group in difference.groupby(level="labelled_per_word"):
            pair_means = group.groupby(level="source").mean()
            print(f"| {name} | {per_word} | {len(group)} | {interval(pair_means)} |")


if __name__ == "__main__":
    main()
