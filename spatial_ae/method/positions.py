"""The position target, the method's core idea: where a clip lies relative to anchors of the unlabelled set.

- Anchors: the mean vector of the unlabelled clips (the paper), or k-means centres of them.
- Positions: cosine distances of a clip's power or log mel to the anchors, or dynamic-time-warping distances of
  its MFCC frame sequence to exemplar clips (the unlabelled clips nearest to k-means centres of the frames).
- Target scaling: positions z-scored per column, and the per-coefficient MFCC standardisation the DTW frames
  (and the recipes' standardised inputs) use.
- Loss balance: the factor on the position loss that makes both heads of the auto-encoder start with equal loss.
"""
from __future__ import annotations

import numpy as np

from spatial_ae.data.features import MFCC_SHAPE

LOG_MEL_FLOOR = 1e-10  # power floor of the log mel, as librosa.power_to_db's amin


def mean_anchor(vectors: np.ndarray) -> np.ndarray:
    """The paper's anchor: the mean of the vectors (e.g. mel, (4096,)), float64."""
    return np.mean(vectors, axis=0, dtype=np.float64)  # float64 sums, without a float64 copy


def anchors(vectors: np.ndarray, num_anchors: int, seed: int) -> np.ndarray:
    """(k, d) anchors: the mean vector for k = 1 (the paper), else k-means centres fitted with `seed`."""
    if num_anchors == 1:
        return mean_anchor(vectors)[None, :]
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=num_anchors, n_init=3, random_state=seed).fit(vectors).cluster_centers_


def cosine_positions(vectors: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Cosine distances of every row to the anchor(s), as scipy's cdist(..., "cosine").

    One anchor (d,) gives (n,), k anchors (k, d) give (n, k). Computed in float64 over blocks of rows, so a large
    float32 mel table is never copied whole.
    """
    anchors = np.asarray(anchors, dtype=np.float64)
    single = anchors.ndim == 1
    anchors = np.atleast_2d(anchors)
    anchor_norms = np.linalg.norm(anchors, axis=1)
    distances = np.empty((len(vectors), len(anchors)), dtype=np.float64)
    for start in range(0, len(vectors), 4096):
        rows = np.asarray(vectors[start:start + 4096], dtype=np.float64)
        norms = np.linalg.norm(rows, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # zero rows give NaN, like cdist
            distances[start:start + len(rows)] = 1.0 - (rows @ anchors.T) / np.outer(norms, anchor_norms)
    return distances[:, 0] if single else distances


def position_features(mel: np.ndarray, kind: str) -> np.ndarray:
    """The vectors cosine positions are measured on: the power mel itself, or its log (dB, floored at -100 dB)."""
    if kind == "power_mel":
        return mel
    if kind == "log_mel":
        return (10.0 * np.log10(np.maximum(mel, LOG_MEL_FLOOR))).astype(np.float32)
    raise ValueError(f"unknown position_features {kind!r}")


def mfcc_statistics(mfcc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (640,) of flattened 20 x 32 MFCC, per coefficient over clips and frames (repeated over
    the frames): per-value statistics would divide by ~0 where short clips' padding is constant (FSDD)."""
    by_coefficient = np.asarray(mfcc, dtype=np.float64).reshape(len(mfcc), *MFCC_SHAPE)
    mean = by_coefficient.mean(axis=(0, 2))
    variance = by_coefficient.var(axis=(0, 2))
    return (np.repeat(mean, MFCC_SHAPE[1]).astype(np.float32), np.repeat(variance, MFCC_SHAPE[1]).astype(np.float32))


def standardized_mfcc(mfcc: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Flattened MFCC standardised per coefficient with the statistics of `rows` (all clips when None)."""
    mean, variance = mfcc_statistics(mfcc if rows is None else mfcc[rows])
    return ((np.asarray(mfcc, dtype=np.float32) - mean) / np.sqrt(np.maximum(variance, 1e-12))).astype(np.float32)


def mfcc_frames(mfcc: np.ndarray) -> np.ndarray:
    """Flattened 20 x 32 MFCC -> (n, 32 frames, 19) sequences of c1..c19, each coefficient standardised over
    the given clips and frames. c0 (the frame's energy) is left out: it measures loudness, not the word."""
    return standardized_mfcc(mfcc).reshape(len(mfcc), *MFCC_SHAPE).transpose(0, 2, 1)[:, :, 1:].copy()


def dtw_distances(sequences: np.ndarray, exemplars: np.ndarray, block: int = 256) -> np.ndarray:
    """(n, T, c) and (k, T', c) frame sequences -> (n, k) dynamic-time-warping costs: the Euclidean frame
    distances summed along the cheapest monotonic alignment (steps right, down, diagonal), divided by T + T'."""
    sequences = np.asarray(sequences, dtype=np.float64)
    exemplars = np.asarray(exemplars, dtype=np.float64)
    steps, exemplar_steps = sequences.shape[1], exemplars.shape[1]
    distances = np.empty((len(sequences), len(exemplars)))
    for start in range(0, len(sequences), block):
        rows = sequences[start:start + block]
        squared = ((rows ** 2).sum(-1)[:, None, :, None] + (exemplars ** 2).sum(-1)[None, :, None, :]
                   - 2.0 * np.einsum("ntc,kuc->nktu", rows, exemplars))
        cost = np.sqrt(np.maximum(squared, 0.0))  # (rows, k, T, T')
        previous = np.full((len(rows), len(exemplars), exemplar_steps + 1), np.inf)
        previous[:, :, 0] = 0.0  # the alignment starts at both sequences' first frames
        for i in range(steps):
            current = np.full_like(previous, np.inf)
            for j in range(exemplar_steps):
                best = np.minimum(np.minimum(previous[:, :, j + 1], current[:, :, j]), previous[:, :, j])
                current[:, :, j + 1] = cost[:, :, i, j] + best
            previous = current
        distances[start:start + len(rows)] = previous[:, :, exemplar_steps] / (steps + exemplar_steps)
    return distances


def exemplar_clips(frames: np.ndarray, num_exemplars: int, seed: int) -> np.ndarray:
    """Indices of `num_exemplars` distinct clips: for each k-means centre of the flattened frames (the mean for
    one), the nearest clip not already chosen."""
    flat = frames.reshape(len(frames), -1).astype(np.float64)
    centres = anchors(flat, num_exemplars, seed)
    squared = (flat ** 2).sum(1)[:, None] + (centres ** 2).sum(1)[None, :] - 2.0 * flat @ centres.T
    chosen: list[int] = []
    for column in squared.T:
        order = np.argsort(column)
        chosen.append(int(next(index for index in order if index not in chosen)))
    return np.asarray(chosen)


def positions(mel: np.ndarray, mfcc: np.ndarray, kind: str, num_anchors: int, seed: int,
              reference: np.ndarray | None = None) -> np.ndarray:
    """(n, k) positions of the given clips: cosine distances of the (log) mel to k anchors, or (`mfcc_dtw`) DTW
    distances of the MFCC frame sequences to k exemplar clips; anchors and exemplars are fitted on the clips
    `reference` indexes (all when None). DTW frames are standardised over all the given clips."""
    reference = slice(None) if reference is None else reference
    if kind == "mfcc_dtw":
        frames = mfcc_frames(mfcc)
        chosen = np.arange(len(frames))[reference][exemplar_clips(frames[reference], num_anchors, seed)]
        return dtw_distances(frames, frames[chosen])
    vectors = position_features(mel, kind)
    return cosine_positions(vectors, anchors(vectors[reference], num_anchors, seed)).reshape(len(vectors), -1)


def position_targets(unlabelled_mel: np.ndarray, unlabelled_mfcc: np.ndarray, position_features_kind: str,
                     num_anchors: int, standardize: bool, seed: int) -> np.ndarray:
    """(u, k) float32 position targets of the unlabelled clips (`positions`, anchors fitted on them),
    z-scored per column when `standardize`."""
    targets = positions(unlabelled_mel, unlabelled_mfcc, position_features_kind, num_anchors, seed)
    if standardize:
        targets = (targets - targets.mean(axis=0)) / np.maximum(targets.std(axis=0), 1e-12)
    return targets.astype(np.float32)


def mean_prediction_mse(targets: np.ndarray) -> float:
    """MSE of predicting every target by its column mean: the loss a head starts from."""
    return float(np.mean(np.var(np.asarray(targets, dtype=np.float64), axis=0)))


def position_loss_scale(reconstruction_targets: np.ndarray, positions: np.ndarray, balance: bool) -> float:
    """Factor on the position loss (times position_loss_weight) that makes both heads start equal when `balance`."""
    if not balance:
        return 1.0
    return mean_prediction_mse(reconstruction_targets) / max(mean_prediction_mse(positions), 1e-12)
