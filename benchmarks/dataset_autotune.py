"""Two simulation workers side by side: tf.data autotuning and prefetching on (as before) against off (kept).

    python benchmarks/dataset_autotune.py [--repeats 3] [--epochs 6] [--rows 12000]

Each repeat starts two processes at once for each variant (the order alternating), as `main` runs two
simulation workers on a 2-core machine: one intra-op and one inter-op thread each, both training the paper's
auto-encoder (position head, FusedAdamax, batch 32, 10 % held out) through `spatial_ae.method.training.fit` on
standardised random rows. Variants of the training pipeline (`spatial_ae.method.speed._dataset`):

- **autotuned**: `.batch(32).prefetch(tf.data.AUTOTUNE)` with tf.data's default options (autotuning on);
- **untuned** (the project's): `.batch(32)` with `options.autotune.enabled = False`, no prefetching.

Printed per process: wall and CPU seconds per epoch (medians, the first epoch left out); per pair: epochs per
second of both together (the throughput of the workflow's simulations) and the share of the wall time each
process was not on a core (1 - CPU / wall).
"""
from __future__ import annotations

import statistics
import subprocess
import sys

VARIANTS = ("autotuned", "untuned")


def autotuned_dataset(x, y, batch_size: int, shuffle: bool):
    """The training pipeline as it was before: prefetched, with tf.data's autotuning on."""
    import tensorflow as tf

    from spatial_ae.method.speed import _as_float32

    x, y = _as_float32(x), _as_float32(y)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run_one(variant: str, epochs: int, rows: int) -> None:
    """Train one auto-encoder in this (fresh) process; print `wall_s_per_epoch cpu_s_per_epoch val_loss`."""
    import numpy as np
    from adamax_kernel import timed_autoencoder_fit  # puts the repository on sys.path

    from spatial_ae.method import speed, training

    if variant == "autotuned":
        speed._dataset = autotuned_dataset
    marks, val_loss = timed_autoencoder_fit(training.optimizer("Adamax"), epochs, rows)
    wall, cpu = (np.median(np.diff([mark[i] for mark in marks])) for i in (0, 1))  # epochs 2, 3, ...
    print(float(wall), float(cpu), val_loss)


def run_pair(variant: str, epochs: int, rows: int) -> list[tuple[float, float, float]]:
    """Two `run_one` processes started together; their (wall, CPU, val loss)."""
    command = [sys.executable, __file__, "--run-one", variant, "--epochs", str(epochs), "--rows", str(rows)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(2)]
    results = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{variant} worker failed (exit {process.returncode})")
        results.append(tuple(map(float, out.split()[-3:])))
    return results


def main() -> None:
    from adamax_kernel import parse_arguments

    args = parse_arguments(__doc__, VARIANTS, repeats=3)
    if args.run_one:
        return run_one(args.run_one, args.epochs, args.rows)
    throughput = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name in VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]:
            pair = run_pair(name, args.epochs, args.rows)
            together = sum(1 / wall for wall, _, _ in pair)
            throughput[name].append(together)
            print(f"repeat {repeat} {name:9s}: " + "; ".join(
                f"{wall:.2f} s/epoch wall, {cpu:.2f} CPU ({1 - cpu / wall:.0%} off-core)" for wall, cpu, _ in pair)
                  + f"; together {together:.3f} epochs/s; final val loss {pair[0][2]:.5f}", flush=True)
    tuned, untuned = (statistics.median(throughput[name]) for name in VARIANTS)
    print(f"median epochs/s of the two together: autotuned {tuned:.3f}, untuned {untuned:.3f}: x{untuned / tuned:.2f}")


if __name__ == "__main__":
    main()
