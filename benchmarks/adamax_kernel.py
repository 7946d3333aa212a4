"""Keras's Adamax against `spatial_ae.method.speed.FusedAdamax` (TensorFlow's fused kernel), in CPU seconds per epoch.

    python benchmarks/adamax_kernel.py [--repeats 2] [--epochs 6] [--rows 12000]

Trains the paper's auto-encoder (position head, MSE + MSE, batch 32) on standardised random rows (10 % held
out for early stopping) through `spatial_ae.method.training.fit` (fast path), once with each optimizer per repeat, the
order alternating, each in a fresh process with one intra-op and one inter-op thread, as in a simulation
worker. CPU time (not wall time) per epoch, because in the workflow two workers keep both cores busy, and CPU
time is what one simulation takes from the other; the median leaves out the first epoch (tracing). Printed:
the medians, their ratio and the final validation losses (equal up to rounding: same seed, same update).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OPTIMIZERS = ("keras", "fused")


def timed_autoencoder_fit(optimizer, epochs: int, rows: int) -> tuple[list[tuple[float, float]], float]:
    """Train the paper's auto-encoder with `optimizer` through `training.fit` in this process (one intra-op and one
    inter-op thread, as a simulation worker); returns the (wall, CPU) time at each epoch's end and the final
    validation loss."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    import numpy as np

    from spatial_ae.method import training
    from spatial_ae.method.models import build_autoencoder

    x = np.random.default_rng(0).normal(size=(rows, 640)).astype(np.float32)
    targets = {"reconstruction": x, "position": x[:, :1] ** 2}
    split = rows * 9 // 10
    training.seed_everything(0)
    model, _ = build_autoencoder(75)
    model.compile(optimizer=optimizer, loss={"reconstruction": "mse", "position": "mse"})
    marks = []  # the training module logs a DEBUG line per epoch

    class EpochMarks(logging.Handler):
        def emit(self, record):
            if " epoch " in record.getMessage():
                marks.append((time.perf_counter(), time.process_time()))

    logger = logging.getLogger("spatial_ae.method.training")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(EpochMarks())
    history = training.fit(model, x[:split], {k: v[:split] for k, v in targets.items()},
                           (x[split:], {k: v[split:] for k, v in targets.items()}), epochs=epochs, patience=epochs,
                           batch_size=32, prefix="ae")
    return marks, history.history["val_loss"][-1]


def run_one(optimizer: str, epochs: int, rows: int) -> None:
    """Train one auto-encoder in this (fresh) process and print `cpu_seconds_per_epoch val_loss`."""
    import keras
    import numpy as np

    from spatial_ae.method import speed

    chosen = speed.FusedAdamax() if optimizer == "fused" else keras.optimizers.Adamax()
    marks, val_loss = timed_autoencoder_fit(chosen, epochs, rows)
    seconds = np.diff([cpu for _, cpu in marks])  # epochs 2, 3, ...: the first epoch (tracing) is left out
    print(float(np.median(seconds)), val_loss)


def parse_arguments(description: str, variants: tuple[str, ...], repeats: int) -> argparse.Namespace:
    """--repeats, --epochs, --rows, and the hidden --run-one VARIANT of a child process."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--run-one", choices=variants, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments(__doc__, OPTIMIZERS, repeats=2)
    if args.run_one:
        return run_one(args.run_one, args.epochs, args.rows)
    found = {name: [] for name in OPTIMIZERS}
    for repeat in range(args.repeats):
        for name in OPTIMIZERS if repeat % 2 == 0 else OPTIMIZERS[::-1]:
            out = subprocess.run([sys.executable, __file__, "--run-one", name, "--epochs", str(args.epochs),
                                  "--rows", str(args.rows)], capture_output=True, text=True, check=True).stdout
            cpu, val_loss = map(float, out.split()[-2:])
            found[name].append(cpu)
            print(f"repeat {repeat} {name:5s}: {cpu:.2f} CPU s/epoch, final val loss {val_loss:.5f}", flush=True)
    keras_cpu, fused_cpu = (statistics.median(found[name]) for name in OPTIMIZERS)
    print(f"median CPU s/epoch: Keras Adamax {keras_cpu:.2f}, FusedAdamax {fused_cpu:.2f}: "
          f"x{keras_cpu / fused_cpu:.2f}")


if __name__ == "__main__":
    main()
