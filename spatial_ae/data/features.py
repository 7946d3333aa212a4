"""MFCC and mel features equal to per-clip librosa, computed for many clips at once.

Reference (the paper's code, per clip): ``librosa.feature.mfcc(y=clip, sr=16000)``
flattened to 640 values and ``librosa.feature.melspectrogram(y=clip, sr=16000,
n_fft=1025)`` flattened to 4096 values. Here the 32 frames of every clip are cut
with stride tricks, windowed, transformed with ``scipy.fft.rfft`` in float32 and
multiplied by block-sparse mel and DCT matrices, with the dB floor (80 dB below
the maximum) applied per clip exactly as the per-clip librosa call does.
librosa transforms in float64 (then rounds to complex64); the float32 FFT differs
only far below each clip's peak. Measured differences and the tolerances they
are tested at are listed in tests/test_features.py.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from spatial_ae.data.audio import CLIP_SAMPLES, SAMPLE_RATE, AudioError, load_clip

MFCC_SHAPE = (20, 32)
MEL_SHAPE = (128, 32)
MFCC_DIM = 640
MEL_DIM = 4096

HOP_LENGTH = 512
N_FRAMES = 32
MFCC_N_FFT = 2048  # librosa.feature.mfcc default
MEL_N_FFT = 1025  # the paper's melspectrogram call
N_MELS = 128
TOP_DB = 80.0
AMIN = 1e-10
_CLIPS_PER_BLOCK = 8  # clips transformed together: keeps the frame buffers in cache
_FILTERS_PER_GROUP = 16  # mel filters multiplied together over the FFT bins they cover
_MAX_PAD = MFCC_N_FFT // 2
_MIN_CLIPS_FOR_WORKERS = 2000  # default workers: in-process below this many files


@dataclass(frozen=True)
class _Spectrogram:
    """Window and block-sparse mel filterbank for one FFT size."""

    window: np.ndarray  # float32 (n_fft,), periodic Hann
    mel_groups: tuple  # (first filter, last filter + 1, first bin, last bin + 1, weights (bins, filters))

    @classmethod
    def build(cls, n_fft: int) -> "_Spectrogram":
        mel = _mel_filters(n_fft)  # float32 (128, bins)
        groups = []
        for first in range(0, N_MELS, _FILTERS_PER_GROUP):
            last = min(first + _FILTERS_PER_GROUP, N_MELS)
            used_bins = np.flatnonzero(mel[first:last].any(axis=0))
            low, high = used_bins[0], used_bins[-1] + 1  # each filter is one contiguous triangle
            groups.append((first, last, low, high, np.ascontiguousarray(mel[first:last, low:high].T)))
        # periodic Hann, as scipy's get_window("hann", n_fft, fftbins=True) that librosa uses
        periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
        return cls(window=periodic_hann.astype(np.float32), mel_groups=tuple(groups))

    def mel_power(self, padded: np.ndarray) -> np.ndarray:
        """Mel power (n, 32, 128) float32 of clips held in ``padded`` (n, 1024 + 16000 + 1024).

        Frames are centred with zero padding at hop 512 (librosa's center=True).
        """
        n_fft = self.window.size
        offset = _MAX_PAD - n_fft // 2
        signal = padded[:, offset:offset + CLIP_SAMPLES + 2 * (n_fft // 2)]
        frames = sliding_window_view(signal, n_fft, axis=1)[:, ::HOP_LENGTH]  # (n, 32, n_fft) view
        spectrum = scipy.fft.rfft(frames * self.window, axis=-1)
        parts = spectrum.view(np.float32)  # re, im interleaved
        np.square(parts, out=parts)
        power = np.add(parts[..., 0::2], parts[..., 1::2])  # |X|**2
        power = power.reshape(-1, power.shape[-1])  # (n * 32, bins)
        mel = np.empty((power.shape[0], N_MELS), dtype=np.float32)
        for first, last, low, high, weights in self.mel_groups:
            np.matmul(power[:, low:high], weights, out=mel[:, first:last])
        return mel.reshape(len(padded), N_FRAMES, N_MELS)


def _mel_filters(n_fft: int) -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=n_fft): 128 Slaney-scale, Slaney-normalised filters.

    Same float64 steps and float32 result as librosa's (a test compares them bit for bit),
    without importing librosa and scipy.signal (slow imports) in every process that computes
    features.
    """
    linear_step, log_start_hz, log_step = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    log_start_mel = log_start_hz / linear_step
    top_mel = log_start_mel + np.log(SAMPLE_RATE / 2 / log_start_hz) / log_step
    mels = np.linspace(0.0, top_mel, N_MELS + 2)
    edges = linear_step * mels  # filter edges in Hz
    is_log = mels >= log_start_mel
    edges[is_log] = log_start_hz * np.exp(log_step * (mels[is_log] - log_start_mel))
    ramps = np.subtract.outer(edges, np.fft.rfftfreq(n=n_fft, d=1.0 / SAMPLE_RATE))
    widths = np.diff(edges)[:, None]
    rising, falling = -ramps[:-2] / widths[:-1], ramps[2:] / widths[1:]
    weights = np.maximum(0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


@dataclass(frozen=True)
class _Transforms:
    """Everything the feature maths needs, built once per process."""

    mfcc: _Spectrogram
    mel: _Spectrogram
    dct: np.ndarray  # float64 (128, 20): orthonormal DCT-II, scipy's dct(norm="ortho")


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    k = np.arange(n_out)[None, :]
    m = np.arange(n_in)[:, None]
    matrix = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * m + 1) / (2 * n_in))
    matrix[:, 0] /= np.sqrt(2.0)
    return matrix


_TRANSFORMS: _Transforms | None = None


def _transforms() -> _Transforms:
    global _TRANSFORMS
    if _TRANSFORMS is None:
        _TRANSFORMS = _Transforms(mfcc=_Spectrogram.build(MFCC_N_FFT), mel=_Spectrogram.build(MEL_N_FFT),
                                  dct=_dct_matrix(N_MELS, MFCC_SHAPE[0]))
    return _TRANSFORMS


def _to_db(power: np.ndarray) -> np.ndarray:
    """librosa.power_to_db(ref=1, amin=1e-10, top_db=80) with the floor per clip (axis 0).

    10 / ln(10) * ln(x) instead of 10 * log10(x): faster in float32, same to ~1 ulp.
    """
    db = np.log(np.maximum(power, np.float32(AMIN)))
    db *= np.float32(10.0 / np.log(10.0))
    floor = db.max(axis=(1, 2), keepdims=True) - np.float32(TOP_DB)
    return np.maximum(db, floor, out=db)


def _features(clips: np.ndarray, want_mfcc: bool, want_mel: bool):
    """MFCC (n, 640) and/or mel (n, 4096) float32 (None when not wanted), block by block."""
    t = _transforms()
    n = len(clips)
    mfcc = np.empty((n, MFCC_DIM), dtype=np.float32) if want_mfcc else None
    mel = np.empty((n, MEL_DIM), dtype=np.float32) if want_mel else None
    padded = np.zeros((min(n, _CLIPS_PER_BLOCK), CLIP_SAMPLES + 2 * _MAX_PAD), dtype=np.float32)
    for start in range(0, n, _CLIPS_PER_BLOCK):
        block = clips[start:start + _CLIPS_PER_BLOCK]
        rows = slice(start, start + len(block))
        padded[:len(block), _MAX_PAD:_MAX_PAD + CLIP_SAMPLES] = block
        block_padded = padded[:len(block)]
        if want_mfcc:
            # float64 DCT: a float32 sum of 128 dB values drifts by ~1e-3, scipy's DCT by ~1e-4
            db = _to_db(t.mfcc.mel_power(block_padded))  # (b, 32, 128)
            coefficients = db.reshape(-1, N_MELS).astype(np.float64) @ t.dct  # (b * 32, 20)
            coefficients = coefficients.reshape(len(block), N_FRAMES, MFCC_SHAPE[0])
            mfcc[rows] = coefficients.transpose(0, 2, 1).reshape(len(block), MFCC_DIM)
        if want_mel:
            mel[rows] = t.mel.mel_power(block_padded).transpose(0, 2, 1).reshape(len(block), MEL_DIM)
    return mfcc, mel


def _check_clips(clips: np.ndarray) -> np.ndarray:
    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim != 2 or clips.shape[1] != CLIP_SAMPLES:
        raise ValueError(f"clips must be (n, {CLIP_SAMPLES}) float32, got shape {clips.shape}; "
                         "use spatial_ae.data.audio.to_clip / load_clip to normalise audio first")
    return clips


def mfcc_and_mel(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16000) clips -> MFCC (n, 640) and mel power (n, 4096), float32, per-clip semantics."""
    return _features(_check_clips(clips), want_mfcc=True, want_mel=True)


def mfcc_only(clips: np.ndarray) -> np.ndarray:
    """(n, 16000) clips -> MFCC (n, 640) float32, as used by the encoder at inference."""
    return _features(_check_clips(clips), want_mfcc=True, want_mel=False)[0]


@dataclass
class FeatureTable:
    """Features of a list of files, rows in input order.

    ``mfcc`` has one row per input file (zeros where ``ok`` is False). ``mel`` has
    one row per input file when ``keep_mel`` was None; otherwise only the rows of
    the files where ``keep_mel`` is True, in input order (``mel[j]`` belongs to
    file ``np.flatnonzero(keep_mel)[j]``), again zeros for unusable files.
    """

    mfcc: np.ndarray  # (n, 640) float32
    mel: np.ndarray  # (n or keep_mel.sum(), 4096) float32
    ok: np.ndarray  # (n,) bool: the file was read and featurized
    errors: list[tuple[str, str]] = field(default_factory=list)  # (relative name, reason)


def _featurize_chunk(paths: list[str], keep_mel: np.ndarray):
    """Read and featurize one chunk: (ok, [(index, reason)], mfcc (n, 640), mel (kept, 4096)); a clip whose
    MFCC is NaN or infinite (overflowing samples) is not ok, as an unreadable one is not."""
    clips = np.zeros((len(paths), CLIP_SAMPLES), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    errors = []
    for index, path in enumerate(paths):
        try:
            clips[index] = load_clip(path)
            ok[index] = True
        except AudioError as error:
            errors.append((index, str(error)))
    if ok.all() and keep_mel.all():  # the usual case: no row selection, no copies
        mfcc, mel = _features(clips, want_mfcc=True, want_mel=True)
    else:
        mfcc = np.zeros((len(paths), MFCC_DIM), dtype=np.float32)
        mel = np.zeros((int(keep_mel.sum()), MEL_DIM), dtype=np.float32)
        if ok.any():
            mfcc[ok] = _features(clips[ok], want_mfcc=True, want_mel=False)[0]
        if (ok & keep_mel).any():
            mel[ok[keep_mel]] = _features(clips[ok & keep_mel], want_mfcc=False, want_mel=True)[1]
    for index in np.flatnonzero(ok & ~np.isfinite(mfcc).all(axis=1)):
        ok[index] = False
        errors.append((index, f"clip {paths[index]}: NaN or infinite features (samples overflow). "
                              f"Fix: re-export or delete it; it was skipped."))
    return ok, errors, mfcc, mel


def _init_worker() -> None:
    """Worker set-up: one BLAS thread per process (the processes are the parallelism)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only avoids BLAS threads competing with the processes
        return
    threadpool_limits(1)


def featurize_files(paths: Sequence[Path], relative_names: Sequence[str] | None = None,
                    workers: int | None = None, chunk_size: int = 256, progress: bool = True,
                    keep_mel: np.ndarray | None = None, map_chunks: Callable | None = None) -> FeatureTable:
    """MFCC (and mel) of WAV files, streamed in chunks over worker processes.

    Unusable files (AudioError) are skipped: ``ok`` is False for them and
    ``errors`` lists (relative name, reason), in input order. ``workers``
    defaults to the CPU count (but in-process for fewer than 2000 files); 0 or 1
    runs in this process. ``keep_mel`` (bool, one per file) limits which mel rows
    are kept, see FeatureTable. Besides the output arrays, only a few chunks of
    raw audio and features are in memory at once. ``map_chunks(function, chunks)``:
    runs the chunks elsewhere instead, in order (a Spark cluster's, runs.spark.Cluster.map_chunks).
    """
    paths = [str(path) for path in paths]
    names = list(relative_names) if relative_names is not None else paths
    if len(names) != len(paths):
        raise ValueError(f"relative_names has {len(names)} entries for {len(paths)} paths")
    keep = np.ones(len(paths), dtype=bool) if keep_mel is None else np.asarray(keep_mel, dtype=bool)
    if keep.shape != (len(paths),):
        raise ValueError(f"keep_mel must be a bool array of shape ({len(paths)},), got {keep.shape}")
    table = FeatureTable(mfcc=np.zeros((len(paths), MFCC_DIM), dtype=np.float32),
                         mel=np.zeros((int(keep.sum()), MEL_DIM), dtype=np.float32),
                         ok=np.zeros(len(paths), dtype=bool))
    mel_row = np.concatenate([[0], np.cumsum(keep)])  # first mel row of each file
    failures: list[tuple[int, str]] = []
    starts = range(0, len(paths), chunk_size)
    if workers is None:  # starting spawned workers costs more than featurizing few clips
        workers = (os.cpu_count() or 1) if len(paths) >= _MIN_CLIPS_FOR_WORKERS else 0
    workers = min(workers, len(starts))

    def store(start: int, result) -> None:
        ok, errors, mfcc, mel = result
        stop = start + len(ok)
        table.ok[start:stop] = ok
        table.mfcc[start:stop] = mfcc
        table.mel[mel_row[start]:mel_row[stop]] = mel
        failures.extend((start + index, reason) for index, reason in errors)
        bar.update(len(ok))

    with tqdm(total=len(paths), unit="clips", disable=not progress, desc="features") as bar:
        if map_chunks is not None:  # executors run in other folders: absolute paths
            absolute = [os.path.abspath(path) for path in paths]
            chunks = [(absolute[start:start + chunk_size], keep[start:start + chunk_size]) for start in starts]
            for start, result in zip(starts, map_chunks(_featurize_chunk, chunks)):
                store(start, result)
        elif workers <= 1:
            for start in starts:
                store(start, _featurize_chunk(paths[start:start + chunk_size],
                                              keep[start:start + chunk_size]))
        else:
            # spawn, not fork: the parent may hold TensorFlow / BLAS threads
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                     initializer=_init_worker) as pool:
                pending: dict = {}
                queue = deque(starts)
                while queue or pending:
                    while queue and len(pending) < 2 * workers:  # bounded: streams, not all at once
                        start = queue.popleft()
                        future = pool.submit(_featurize_chunk, paths[start:start + chunk_size],
                                             keep[start:start + chunk_size])
                        pending[future] = start
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        store(pending.pop(future), future.result())
    table.errors = [(names[index], reason) for index, reason in sorted(failures)]
    return table
