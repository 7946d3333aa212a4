"""Markdown tables of a sweep's `sweep.csv`: accuracy per configuration, and paired differences.

python benchmarks/sweep_report.py results/sweep/sweep.csv
Differences are paired by (labelled_per_word, simulation): the same seed, labelled sample and test clips.
"""
from __future__ import annotations

import sys

import pandas as pd

from spatial_ae.summarize import describe

def configuration(row) -> str:
    if row.model == "mfcc_cnn":
        return "MFCC-CNN"
    if row.model == "mfcc_dnn":
        return "MFCC-DNN"
    if row.weight == 0:
        return "plain AE (paper inputs)" if row.recipe == "paper" else "plain AE (standardised)"
    return f"spatial AE ({row.recipe})" + ("" if row.weight == 1 else f", weight {row.weight:g}")


def accuracies(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per configuration, labelled_per_word and simulation (baselines averaged over the cells)."""
    table = table.assign(configuration=[configuration(row) for row in table.itertuples()])
    return table.groupby(["configuration", "labelled_per_word", "simulation"], as_index=False)["accuracy"].mean()


def comparisons(configurations) -> list[tuple[str, str]]:
    """(better, worse) pairs: each spatial AE against its plain AE, the MFCC baselines and the other recipes."""
    spatial = sorted(name for name in configurations if name.startswith("spatial AE ("))
    pairs = []
    for name in spatial:
        plain = "plain AE (paper inputs)" if name.startswith("spatial AE (paper") else "plain AE (standardised)"
        pairs += [(name, plain), (name, "MFCC-CNN"), (name, "MFCC-DNN")]
        pairs += [(name, other) for other in spatial if other < name]
    return pairs


def interval(values) -> str:
    d = describe(values)
    return f"{d['mean']:.3f} [{d['ci95_low']:.3f}, {d['ci95_high']:.3f}]"


def report(path: str) -> str:
    scores = accuracies(pd.read_csv(path))
    lines = ["| configuration | labelled per word | n | accuracy, mean [95% CI] |", "|---|---|---|---|"]
    for (name, per_word), group in scores.groupby(["configuration", "labelled_per_word"]):
        lines.append(f"| {name} | {per_word} | {len(group)} | {interval(group['accuracy'])} |")
    wide = scores.pivot_table(index=["labelled_per_word", "simulation"], columns="configuration", values="accuracy")
    lines += ["", "| paired difference | labelled per word | mean [95% CI] |", "|---|---|---|"]
    for better, worse in comparisons(wide.columns):
        if worse in wide:
            for per_word, group in (wide[better] - wide[worse]).groupby(level=0):
                lines.append(f"| {better} - {worse} | {per_word} | {interval(group.dropna())} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
