"""Auto-encoder pretraining: the project's `fit` against the straightforward Keras call, side by side.

    python benchmarks/training_speed.py [--clips 12000] [--repeats 2] [--max-epochs 500] [--patience 5]

Data: MFCC (640) and power mel (4,096) of --distinct-clips generated 1 s, 16 kHz signals (tones with a harmonic,
chirps, band-limited noise, each with a random onset, length and gain, plus a faint noise floor), computed
with `spatial_ae.data.features.mfcc_and_mel`; position = cosine distance of the mel to the mean mel (the `paper`
recipe: raw MFCC in and out); --clips rows cycle over them with 5% Gaussian jitter. 10% is held out for early stopping, as in the pretrain step.

Both implementations train the same auto-encoder (`build_autoencoder(75)`, Adamax, MSE + MSE, batch 32,
EarlyStopping(val_loss, patience, best weights restored)) from the same seed, in this one process, alternating
(plain, fast, plain, fast, ...; the order flips every repeat) so that a busy machine slows both alike:

- plain: NumPy arrays into `model.fit(..., batch_size=32, shuffle=True)`, default `compile` options;
- fast:  `spatial_ae.method.training.fit` (through `spatial_ae.method.speed`: tf.data pipeline, large validation
  batches, steps_per_execution, traced twins, fused Adamax).

Printed per run: epochs to early stopping, seconds per epoch (the first epoch, which traces the functions,
counted separately), total seconds, final (restored best) validation loss; then the median ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 16000


def generated_clips(count: int, seed: int = 0) -> np.ndarray:
    """(count, 16000) float32 signals: tones, chirps and noise bursts with random onset, length and gain."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    clips = np.empty((count, SR), dtype=np.float32)
    for i in range(count):
        kind = i % 3
        if kind == 0:
            f = rng.uniform(80, 4000)
            signal = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t + rng.uniform(0, 6))
        elif kind == 1:
            f0, f1 = rng.uniform(100, 6000, 2)
            signal = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / 2))
        else:
            noise = rng.standard_normal(SR)
            width = int(rng.integers(2, 200))
            signal = np.convolve(noise, np.ones(width) / width, mode="same") * np.sqrt(width)
        start = int(rng.integers(0, SR // 2))
        length = int(rng.integers(SR // 8, SR - start))
        envelope = np.zeros(SR)
        envelope[start:start + length] = np.hanning(length)
        gain = 10 ** (rng.uniform(-50, -3) / 20)
        clips[i] = gain * signal * envelope + 1e-4 * rng.standard_normal(SR)
    return clips


def autoencoder_data(count: int, distinct: int, seed: int = 0):
    """MFCC (count, 640) and positions (count, 1) as the pretrain step would use them.

    `distinct` clips are generated and featurized; row i is clip i % distinct's MFCC plus Gaussian jitter of
    5% of each coefficient's standard deviation (featurizing 12,000 clips would take minutes on 2 busy cores).
    """
    from spatial_ae.data.features import mfcc_and_mel
    from spatial_ae.method.positions import cosine_positions, mean_anchor

    distinct = min(distinct, count)
    mfcc, mels = [], []
    for start in range(0, distinct, 500):
        m, mel = mfcc_and_mel(generated_clips(min(500, distinct - start), seed + start))
        mfcc.append(m)
        mels.append(mel)
    mfcc, mel = np.concatenate(mfcc), np.concatenate(mels)
    positions = cosine_positions(mel, mean_anchor(mel)).reshape(-1, 1).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = np.arange(count) % distinct
    jitter = 0.05 * mfcc.std(axis=0) * rng.standard_normal((count, mfcc.shape[1]))
    return (mfcc[rows] + jitter).astype(np.float32), positions[rows]


class EpochTimer:
    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                now = time.perf_counter()
                self.times.append(now - self.start)
                self.start = now

        return _Timer()


def train_once(path: str, x, positions, max_epochs: int, patience: int, seed: int) -> dict:
    import keras

    from spatial_ae.method import training
    from spatial_ae.method.models import build_autoencoder

    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(0.1 * len(x))))
    val, train = order[:n_val], order[n_val:]

    def targets(rows):
        return {"reconstruction": x[rows], "position": positions[rows]}

    training.seed_everything(seed)
    model, _ = build_autoencoder(75)
    optimizer = keras.optimizers.Adamax() if path == "plain" else training.optimizer("Adamax")  # fused on "fast"
    model.compile(optimizer=optimizer, loss={"reconstruction": "mse", "position": "mse"},
                  loss_weights={"reconstruction": 1.0, "position": 1.0})
    timer = EpochTimer()
    start = time.perf_counter()
    if path == "plain":
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        history = model.fit(x[train], targets(train), validation_data=(x[val], targets(val)), epochs=max_epochs,
                            batch_size=32, shuffle=True, callbacks=[stopper, timer], verbose=0)
    else:
        original = training.EpochLogger.on_epoch_end
        training.TRAINING_PATH = "fast"
        # the timer rides along with the project's callbacks: wrap EpochLogger for this run only
        training.EpochLogger.on_epoch_end = lambda self, epoch, logs=None: (
            timer.on_epoch_end(epoch, logs), original(self, epoch, logs))[-1]
        timer.on_train_begin()
        try:
            history = training.fit(model, x[train], targets(train), (x[val], targets(val)), epochs=max_epochs,
                                   patience=patience, batch_size=32, prefix="bench")
        finally:
            training.EpochLogger.on_epoch_end = original
    total = time.perf_counter() - start
    final = model.evaluate(x[val], targets(val), batch_size=1024, verbose=0, return_dict=True)["loss"]
    later = timer.times[1:] or timer.times
    return {"path": path, "epochs": len(history.history["loss"]), "first_epoch_s": timer.times[0],
            "s_per_epoch": statistics.median(later), "total_s": total, "val_loss": float(final)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12000, help="auto-encoder inputs (paper: 12,000)")
    parser.add_argument("--distinct-clips", type=int, default=1500,
                        help="generated clips actually featurized; the rest are jittered copies")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs (plain and fast alternate)")
    parser.add_argument("--max-epochs", type=int, default=500, help="epoch limit (paper: 500)")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience (paper: 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import logging
    import os

    logging.getLogger("spatial_ae").setLevel(logging.WARNING)
    import tensorflow as tf

    start = time.perf_counter()
    x, positions = autoencoder_data(args.clips, args.distinct_clips, args.seed)
    print(f"data: {x.shape[0]} x {x.shape[1]} MFCC of {min(args.distinct_clips, args.clips)} generated clips in {time.perf_counter() - start:.1f} s; "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for repeat in range(args.repeats):
        for path in (("plain", "fast") if repeat % 2 == 0 else ("fast", "plain")):
            row = train_once(path, x, positions, args.max_epochs, args.patience, args.seed + repeat)
            rows.append(row)
            print(f"repeat {repeat} {path:5s}: {row['epochs']:3d} epochs, first epoch {row['first_epoch_s']:.2f} s, "
                  f"{row['s_per_epoch']:.3f} s/epoch, total {row['total_s']:.1f} s, final val loss "
                  f"{row['val_loss']:.5g} (load {os.getloadavg()[0]:.1f})", flush=True)
    print("\nratios plain / fast per repeat (same seed, run back to back):")
    per_epoch, total = [], []
    for repeat in range(args.repeats):
        plain = next(r for r in rows[2 * repeat: 2 * repeat + 2] if r["path"] == "plain")
        fast = next(r for r in rows[2 * repeat: 2 * repeat + 2] if r["path"] == "fast")
        per_epoch.append(plain["s_per_epoch"] / fast["s_per_epoch"])
        total.append(plain["total_s"] / fast["total_s"])
        print(f"  repeat {repeat}: s/epoch x{per_epoch[-1]:.2f}, time to early stopping x{total[-1]:.2f} "
              f"(epochs {plain['epochs']} vs {fast['epochs']}; val loss {plain['val_loss']:.5g} vs {fast['val_loss']:.5g})")
    print(f"median: s/epoch x{statistics.median(per_epoch):.2f}, time to early stopping x{statistics.median(total):.2f}")


if __name__ == "__main__":
    main()
