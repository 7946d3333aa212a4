"""How much word information, across speakers, each kind of position target carries (issue 9).

python benchmarks/position_information.py [--fsdd ../shared/data/fsdd] [--seed 0]

On the Free Spoken Digit Dataset, positions are computed for every clip as the pretrain step computes them
(anchors or exemplars from the four unlabelled speakers), then a logistic regression learns the digit from the
positions alone: trained on one speaker, tested on another (all 30 speaker pairs, 500 clips each), and as in the
sweep (theo -> yweweler, 5 clips per digit, 5 draws), and as in the sweeps over every speaker pair (2 clips per
digit, 4 draws, anchors or exemplars from the pair's four other speakers). The flattened MFCC are the reference,
as the encoder gets them and with each clip's mean removed (cepstral mean normalisation, the classic remedy for
speaker and channel differences).
A position target that carries little word information cannot teach the encoder anything a word classifier could
use. 4 to 8 minutes on FSDD.
"""
from __future__ import annotations

import argparse
import warnings
from itertools import permutations
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spatial_ae.data.corpus import UNLABELLED
from spatial_ae.data.sources import FSDD_SPEAKERS, fsdd_split_of_speaker
from spatial_ae.data.features import MFCC_SHAPE, featurize_files
from spatial_ae.method.positions import positions, standardized_mfcc

TARGETS = (  # (name, position_features, num_anchors)
    ("power mel, mean anchor (paper)", "power_mel", 1),
    ("log mel, 8 k-means anchors (balanced)", "log_mel", 8),
    ("log mel, 32 k-means anchors", "log_mel", 32),
    ("MFCC DTW, 32 exemplar clips (dtw)", "mfcc_dtw", 32),
)


def features(table, unlabelled, kind: str | None, k: int, seed: int) -> np.ndarray:
    """What the classifier is given: the flattened MFCC standardised per coefficient with the unlabelled clips'
    statistics, as the encoder's input (kind None), the same after removing each clip's mean per coefficient
    (`mfcc_clip_mean`), or the positions of every clip, with anchors (exemplars) chosen among the unlabelled clips
    (DTW frames standardised with all clips' statistics, the pretrain step's with the unlabelled clips')."""
    if kind is None:
        return standardized_mfcc(table.mfcc, unlabelled)
    if kind == "mfcc_clip_mean":
        by_coefficient = table.mfcc.reshape(len(table.mfcc), *MFCC_SHAPE)
        centred = by_coefficient - by_coefficient.mean(axis=2, keepdims=True)
        return standardized_mfcc(centred.reshape(len(table.mfcc), -1), unlabelled)
    return positions(table.mel, table.mfcc, kind, k, seed, reference=unlabelled)


def accuracy(x, digits, train, test) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(model.fit(x[train], digits[train]).score(x[test], digits[test]))


def per_digit(rows, digits, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(rows[digits[rows] == d], count, replace=False) for d in range(10)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fsdd", default=str(Path(__file__).resolve().parents[2] / "shared/data/fsdd"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = sorted(f for f in (Path(args.fsdd) / "recordings").glob("*.wav")
                   if f.stem.split("_")[1] in FSDD_SPEAKERS)
    if not files:
        raise SystemExit(f"no FSDD recordings under {args.fsdd}/recordings. Fix: pass --fsdd /path/to/fsdd")
    speakers = np.array([f.stem.split("_")[1] for f in files])
    digits = np.array([int(f.stem.split("_")[0]) for f in files])
    table = featurize_files(files, progress=False)
    unlabelled = np.flatnonzero([fsdd_split_of_speaker()[s] == UNLABELLED for s in speakers])
    theo, yweweler = np.flatnonzero(speakers == "theo"), np.flatnonzero(speakers == "yweweler")
    targets = [("MFCC itself (reference)", None, 0),
               ("MFCC, each clip's mean removed (reference)", "mfcc_clip_mean", 0)] + list(TARGETS)
    print("| features given to the classifier | dimensions | one speaker -> another (30 pairs, 500 clips) "
          "| theo -> yweweler, 5 per digit (5 draws) | every pair, 2 per digit (30 pairs x 4 draws) |"
          "\n|---|---|---|---|---|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, kind, k in targets:
            x = features(table, unlabelled, kind, k, args.seed)
            pairs = np.mean([accuracy(x, digits, speakers == a, speakers == b)
                             for a, b in permutations(FSDD_SPEAKERS, 2)])
            few = np.mean([accuracy(x, digits, per_digit(theo, digits, 5, draw), yweweler) for draw in range(5)])
            every_pair = []
            for a, b in permutations(FSDD_SPEAKERS, 2):
                others = features(table, np.flatnonzero((speakers != a) & (speakers != b)), kind, k, args.seed)
                labelled, test = np.flatnonzero(speakers == a), speakers == b
                every_pair += [accuracy(others, digits, per_digit(labelled, digits, 2, draw), test)
                               for draw in range(4)]
            print(f"| {name} | {x.shape[1]} | {pairs:.3f} | {few:.3f} | {np.mean(every_pair):.3f} |", flush=True)


if __name__ == "__main__":
    main()
