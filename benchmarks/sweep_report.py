"""Markdown tables of a sweep's `sweep.csv`: accuracy per configuration, and paired differences.

python benchmarks/sweep_report.py results/sweep/sweep.csv [more/sweep.csv ...] [--figure label_efficiency.png]
Differences are paired by (labelled_per_word, simulation): the same seed, labelled sample and test clips.
Several files (sweeps of other corpora or speaker splits, e.g. FSDD's `labelled=`/`test=` pairs) are pooled:
each (file, simulation) is one paired observation, and a last table gives each file's mean differences.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from spatial_ae.method.recipes import RECIPES, resolve_recipe
from spatial_ae.steps.summarize import describe


def configuration(row) -> str:
    if row.model == "mfcc_cnn":
        return "MFCC-CNN"
    if row.model == "mfcc_dnn":
        return "MFCC-DNN"
    if row.weight == 0:
        return plain_autoencoder(row.recipe)
    return f"spatial AE ({row.recipe})" + ("" if row.weight == 1 else f", weight {row.weight:g}")


def plain_autoencoder(recipe: str) -> str:
    """The plain AE (weight 0) a recipe's spatial AE is compared with: same inputs, code and training clips,
    no position head. Recipes whose plain AEs are one encoder share its name."""
    if recipe not in RECIPES:
        return "plain AE (standardised)"  # recipes of older sweeps: balanced-like
    identity = resolve_recipe(recipe, position_loss_weight=0.0).identity()
    for name, shared in (("paper inputs", "paper"), ("standardised", "balanced")):
        if identity == resolve_recipe(shared, position_loss_weight=0.0).identity():
            return f"plain AE ({name})"
    return f"plain AE ({recipe})"


def accuracies(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per configuration, labelled_per_word, source file and simulation (baselines averaged over the
    cells)."""
    table = table.assign(configuration=[configuration(row) for row in table.itertuples()])
    keys = ["configuration", "labelled_per_word", "source", "simulation"]
    return table.groupby(keys, as_index=False)["accuracy"].mean()


def comparisons(configurations) -> list[tuple[str, str]]:
    """(better, worse) pairs: each spatial AE against its plain AE, the MFCC baselines and the other recipes."""
    spatial = sorted(name for name in configurations if name.startswith("spatial AE ("))
    pairs = []
    for name in spatial:
        plain = plain_autoencoder(name.removeprefix("spatial AE (").split(")")[0])
        pairs += [(name, plain), (name, "MFCC-CNN"), (name, "MFCC-DNN")]
        pairs += [(name, other) for other in spatial if other < name]
    plain = sorted(name for name in configurations if name.startswith("plain AE (") and name != "plain AE (paper inputs)")
    return pairs + [(name, "plain AE (paper inputs)") for name in plain]


def interval(values) -> str:
    d = describe(values)
    return f"{d['mean']:.3f} [{d['ci95_low']:.3f}, {d['ci95_high']:.3f}]"


def report(paths: list[str]) -> str:
    scores = accuracies(pd.concat([pd.read_csv(path).assign(source=path) for path in paths]))
    lines = ["| configuration | labelled per word | n | accuracy, mean [95% CI] |", "|---|---|---|---|"]
    for (name, per_word), group in scores.groupby(["configuration", "labelled_per_word"]):
        lines.append(f"| {name} | {per_word} | {len(group)} | {interval(group['accuracy'])} |")
    wide = scores.pivot_table(index=["labelled_per_word", "source", "simulation"], columns="configuration",
                              values="accuracy")
    pooled = len(paths) > 1  # then also the CI over the files' means: the spread between corpora or speaker pairs
    header = "| paired difference | labelled per word | mean [95% CI] |" + (" over files' means |" if pooled else "")
    lines += ["", header, "|---|---|---|" + ("---|" if pooled else "")]
    per_file = {}
    for better, worse in comparisons(wide.columns):
        if worse in wide:
            for per_word, group in (wide[better] - wide[worse]).dropna().groupby(level=0):
                file_means = group.groupby(level=1).mean()
                per_file[f"{better} - {worse}, {per_word} per word"] = file_means
                by_file = f" {interval(file_means)} |" if pooled else ""
                lines.append(f"| {better} - {worse} | {per_word} | {interval(group)} |{by_file}")
    if pooled:
        columns = pd.DataFrame(per_file)
        lines += ["", "| file | " + " | ".join(columns.columns) + " |", "|---|" + "---|" * len(columns.columns)]
        lines += [f"| {label(path)} | " + " | ".join(f"{value:+.3f}" for value in row) + " |"
                  for path, row in columns.iterrows()]
    return "\n".join(lines)


def against(path: str, baseline_path: str) -> str:
    """Paired differences of each configuration between two sweeps run with the same seeds (the same labelled
    samples and test clips), e.g. one option changed: `path` minus `baseline_path`."""
    scores = [accuracies(pd.read_csv(p).assign(source=p)).drop(columns="source") for p in (path, baseline_path)]
    paired = scores[0].merge(scores[1], on=["configuration", "labelled_per_word", "simulation"], suffixes=("", "_base"))
    lines = [f"| configuration: {label(path)} - {label(baseline_path)} | labelled per word | n | mean [95% CI] |",
             "|---|---|---|---|"]
    for (name, per_word), group in paired.groupby(["configuration", "labelled_per_word"]):
        lines.append(f"| {name} | {per_word} | {len(group)} | {interval(group['accuracy'] - group['accuracy_base'])} |")
    return "\n".join(lines)


def label(path: str) -> str:
    """A file's name in the tables: its folder's for `.../<folder>/sweep.csv`, else its stem."""
    return Path(path).parent.name if Path(path).name == "sweep.csv" else Path(path).stem


def pooled_figure(paths: list[str], figure_path: str) -> None:
    """The sweep's label-efficiency figure over all files, each (file, simulation) one simulation."""
    from spatial_ae.runs.sweep import label_efficiency_figure

    tables = [pd.read_csv(path).assign(simulation=lambda t, name=label(path): name + "/" + t["simulation"].astype(str))
              for path in paths]
    label_efficiency_figure(pd.concat(tables, ignore_index=True)).savefig(figure_path, dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="sweep.csv files")
    parser.add_argument("--figure", help="also write the label-efficiency figure of all files pooled here")
    parser.add_argument("--against", help="a sweep.csv with the same seeds: paired differences of the first file minus it")
    args = parser.parse_args()
    print(report(args.paths))
    if args.against:
        print()
        print(against(args.paths[0], args.against))
    if args.figure:
        pooled_figure(args.paths, args.figure)
