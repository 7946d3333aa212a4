"""The fixed cost of a fit: tracing Keras's functions every fit against reusing an earlier fit's traced twin.

    python benchmarks/fit_overhead.py [--fits 4] [--rows 2000] [--epochs 3]

Every simulation trains four fresh models (the auto-encoder, the embedding DNN, the MFCC-CNN, the MFCC-DNN), and
Keras traces its train and test functions anew for each model. `spatial_ae.method.training.fit` reuses, within a
process, a compiled twin of the same architecture (`REUSE_TRACED`, see spatial_ae/method/speed.py). This trains
--fits models of each kind, one after the other, each from its own seed, in this one process, alternating
"trace" (`REUSE_TRACED = False`, a fresh model traced every fit) and "reuse" (the default), and checks that
both ways end with the same variables. Printed: seconds per fit, the first reuse fit (which traces the twin)
counted separately, and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_fit(kind: str, seed: int, x: np.ndarray, y: np.ndarray, epochs: int):
    """Build, compile and fit one model of `kind` as the pretrain and evaluate steps do; returns it."""
    from spatial_ae.method import training
    from spatial_ae.method.models import build_autoencoder, build_dnn_probe, build_mfcc_cnn

    training.seed_everything(seed)
    split = len(x) * 9 // 10
    if kind == "autoencoder":
        model, _ = build_autoencoder(75)
        model.compile(optimizer=training.optimizer("Adamax"), loss={"reconstruction": "mse", "position": "mse"})
        targets = {"reconstruction": x, "position": x[:, :1] ** 2}
    else:
        model = build_mfcc_cnn(30) if kind == "mfcc_cnn" else build_dnn_probe(x.shape[1], 30)
        optimizer = training.optimizer("Adamax" if kind == "mfcc_cnn" else "Nadam")
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        targets = y

    def rows(values, part):
        return {name: value[part] for name, value in values.items()} if isinstance(values, dict) else values[part]

    training.fit(model, x[:split], rows(targets, slice(None, split)), (x[split:], rows(targets, slice(split, None))),
                 epochs=epochs, patience=epochs, batch_size=32, prefix=kind)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fits", type=int, default=4, help="models of each kind per way")
    parser.add_argument("--rows", type=int, default=2000, help="training + early-stopping rows")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from spatial_ae.runs import parallel
    from spatial_ae.method import speed

    parallel.configure_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, 640)).astype(np.float32)
    y = rng.integers(0, 30, args.rows)
    for kind in ("autoencoder", "dnn_probe", "mfcc_cnn"):
        seconds = {"trace": [], "reuse": []}
        for seed in range(args.fits):
            variables = {}
            for way in ("trace", "reuse") if seed % 2 == 0 else ("reuse", "trace"):
                speed.REUSE_TRACED = way == "reuse"
                start = time.perf_counter()
                model = one_fit(kind, seed, x, y, args.epochs)
                seconds[way].append(time.perf_counter() - start)
                variables[way] = [variable.numpy() for variable in model.variables]
            same = all(np.array_equal(a, b) for a, b in zip(variables["trace"], variables["reuse"]))
            print(f"{kind} seed {seed}: trace {seconds['trace'][-1]:.2f} s, reuse {seconds['reuse'][-1]:.2f} s, "
                  f"same variables: {same}", flush=True)
        trace, reuse = statistics.median(seconds["trace"]), statistics.median(seconds["reuse"][1:])
        print(f"{kind}: median fit {trace:.2f} s tracing every fit, {reuse:.2f} s reusing the twin "
              f"(first reuse fit {seconds['reuse'][0]:.2f} s): x{trace / reuse:.2f}", flush=True)


if __name__ == "__main__":
    main()
