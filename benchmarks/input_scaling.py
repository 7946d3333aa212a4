"""Why standardising the MFCC loses words across many speakers: word and speaker information per coefficient.

python benchmarks/input_scaling.py [--corpus ../shared/data/speech_commands_v0.02_dev] [--seed 0]

For each MFCC coefficient (its 32-frame trajectory), on the dev corpus's keyword clips:
- its share of the raw MFCC's variance: how much of the paper's reconstruction loss (MSE on raw MFCC) it weighs;
  standardising gives every coefficient the same 5%;
- word accuracy of a logistic regression on that coefficient alone, trained on the labelled pool's speakers and
  tested on the test speakers (chance 0.10);
- speaker accuracy on that coefficient alone, within the unlabelled clips of speakers with 4 clips or more
  (half of each speaker's clips train, half test).
Then word accuracy of the whole MFCC, raw, standardised per coefficient, and in coefficient groups: where the
words are, across speakers, and where the speaker is. About a minute.
"""
from __future__ import annotations

import argparse
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from spatial_ae.data.corpus import TEST, TRAIN, UNLABELLED
from spatial_ae.data.sources import open_corpus
from spatial_ae.data.features import MFCC_SHAPE, featurize_files

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech_commands_v0.02_dev"


def probe_accuracy(train_x, train_y, test_x, test_y, seed: int) -> float:
    """Logistic regression on features z-scored with the training clips' statistics (as the DNN probe is)."""
    scaler = StandardScaler().fit(train_x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=2000, C=0.1, random_state=seed).fit(scaler.transform(train_x), train_y)
    return float((model.predict(scaler.transform(test_x)) == test_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEV)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = open_corpus(str(args.corpus))
    table = featurize_files([clip.file for clip in corpus.clips], progress=False)
    ok = table.ok
    clips = [clip for clip, good in zip(corpus.clips, ok) if good]
    mfcc = table.mfcc[ok].reshape(-1, *MFCC_SHAPE)  # (n, 20 coefficients, 32 frames)
    words = np.array([clip.word for clip in clips])
    speakers = np.array([Path(clip.path).name.split("_nohash_")[0] for clip in clips])
    split = np.array([clip.split for clip in clips])
    train, test, unlabelled = split == TRAIN, split == TEST, split == UNLABELLED

    counts = Counter(speakers[unlabelled])
    frequent = unlabelled & np.isin(speakers, [s for s, n in counts.items() if n >= 4])
    order = np.flatnonzero(frequent)
    first_half = np.zeros(len(clips), bool)
    for speaker in np.unique(speakers[frequent]):
        own = order[speakers[order] == speaker]
        first_half[own[: len(own) // 2]] = True
    speaker_train, speaker_test = frequent & first_half, frequent & ~first_half

    variance = mfcc.var(axis=(0, 2))
    print(f"{args.corpus.name}: {train.sum()} labelled-pool clips, {test.sum()} test clips, "
          f"{len(np.unique(speakers[frequent]))} unlabelled speakers with >= 4 clips ({frequent.sum()} clips)\n")
    print("| coefficient | share of raw variance | word accuracy, test speakers | speaker accuracy |")
    print("|---|---|---|---|")
    for c in range(MFCC_SHAPE[0]):
        x = mfcc[:, c, :]
        word = probe_accuracy(x[train], words[train], x[test], words[test], args.seed)
        speaker = probe_accuracy(x[speaker_train], speakers[speaker_train], x[speaker_test], speakers[speaker_test],
                                 args.seed)
        print(f"| c{c} | {variance[c] / variance.sum():.3f} | {word:.3f} | {speaker:.3f} |")

    flat = mfcc.reshape(len(mfcc), -1)
    by_coefficient = (mfcc - mfcc[unlabelled].mean(axis=(0, 2))[None, :, None]) / np.sqrt(variance)[None, :, None]
    groups = {"raw MFCC, c0-c19 (the paper's input; the probe z-scores each value)": flat,
              "raw MFCC, no per-value z-score (scale as the raw reconstruction loss sees it)": None,
              "c0-c4": mfcc[:, :5].reshape(len(mfcc), -1), "c5-c12": mfcc[:, 5:13].reshape(len(mfcc), -1),
              "c13-c19": mfcc[:, 13:].reshape(len(mfcc), -1)}
    print("\n| input | word accuracy, test speakers | speaker accuracy |")
    print("|---|---|---|")
    for name, x in groups.items():
        if x is None:  # weight each value by its raw scale: divide by one global standard deviation only
            x = by_coefficient.reshape(len(mfcc), -1) * np.sqrt(variance / variance.mean()).repeat(MFCC_SHAPE[1])
            fit = _unscaled_accuracy
        else:
            fit = probe_accuracy
        word = fit(x[train], words[train], x[test], words[test], args.seed)
        speaker = fit(x[speaker_train], speakers[speaker_train], x[speaker_test], speakers[speaker_test], args.seed)
        print(f"| {name} | {word:.3f} | {speaker:.3f} |")


def _unscaled_accuracy(train_x, train_y, test_x, test_y, seed: int) -> float:
    """Logistic regression on the features as given: the L2 penalty then favours the large-scale values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=2000, C=0.1, random_state=seed).fit(train_x, train_y)
    return float((model.predict(test_x) == test_y).mean())


if __name__ == "__main__":
    main()
