"""Clips/s of featurize_files against the naive per-clip librosa loop, and how equal they are.

    python benchmarks/featurize_throughput.py [--synthetic-clips 5000] [--naive-clips 500] [--workers N]

Corpora: every clip of ../shared/data/speech_commands_v0.01_sample (skipped when
absent) and N generated 1 s, 16 kHz, 16-bit WAVs (tones, noise, chirps, silence)
written to a temporary folder and deleted afterwards. The naive loop (scipy
wavfile read, /32768, pad, per-clip librosa mfcc and melspectrogram) runs on the
first --naive-clips clips of each corpus; its rate is compared with featurize_files
over the whole corpus and the features of the shared clips are compared.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial_ae.data.features import featurize_files, mfcc_and_mel  # noqa: E402

SHARED_DATA = Path(os.environ.get("SPATIAL_AE_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


# 44-byte header of a 1 s, 16 kHz, mono, 16-bit PCM WAV
WAV_HEADER = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + 32000, b"WAVE", b"fmt ", 16, 1, 1,
                         16000, 32000, 2, 16, b"data", 32000)


def write_synthetic_wavs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Write `count` 1 s 16 kHz 16-bit WAVs: tones, chirps and noise with silent stretches.

    64 base signals get a random shift, gain (-60..-2 dB) and onset/offset each,
    plus a faint noise floor; files go to 1000-file subfolders.
    """
    rng = np.random.default_rng(seed)
    time_axis = np.arange(16000) / 16000.0
    bases = []
    for index in range(64):
        if index % 3 == 0:  # tone with a harmonic
            frequency = rng.uniform(80, 4000)
            bases.append(np.sin(2 * np.pi * frequency * time_axis) + 0.3 * np.sin(4 * np.pi * frequency * time_axis))
        elif index % 3 == 1:  # linear chirp
            start, stop = rng.uniform(100, 7000, size=2)
            bases.append(np.sin(2 * np.pi * (start * time_axis + (stop - start) / 2 * time_axis ** 2)))
        else:  # white noise
            bases.append(rng.standard_normal(16000) / 3)
    paths = []
    for index in range(count):
        wave = np.roll(bases[index % 64], int(rng.integers(16000)))
        wave = wave / np.abs(wave).max() * 10 ** rng.uniform(-3, -0.1)
        onset, offset = sorted(rng.integers(0, 16000, size=2))
        wave[:onset] = 0.0
        wave[offset + 4000:] = 0.0
        wave += rng.standard_normal(16000) * 1e-4
        samples = np.clip(np.round(wave * 32767), -32768, 32767).astype("<i2")
        path = folder / f"{index // 1000:03d}" / f"synthetic_{index:06d}.wav"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(WAV_HEADER + samples.tobytes())
        paths.append(path)
    return paths


def naive_features(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, float]:
    """The paper's per-clip loop: (mfcc (n, 640), mel (n, 4096), clips/s)."""
    import librosa
    from scipy.io import wavfile

    librosa.feature.mfcc(y=np.zeros(16000, np.float32), sr=16000)  # warm-up outside the timing
    mfcc, mel = [], []
    start = time.perf_counter()
    for path in paths:
        _, samples = wavfile.read(path)
        clip = samples.astype(np.float32) / 32768.0
        clip = np.pad(clip[:16000], (0, max(0, 16000 - len(clip))))
        mfcc.append(librosa.feature.mfcc(y=clip, sr=16000).flatten())
        mel.append(librosa.feature.melspectrogram(y=clip, sr=16000, n_fft=1025).flatten())
    rate = len(paths) / (time.perf_counter() - start)
    return np.array(mfcc), np.array(mel), rate


def compare(name: str, paths: list[Path], naive_clips: int, workers: int | None) -> dict:
    """Time both ways on one corpus and print rates, ratio and feature differences."""
    naive_mfcc, naive_mel, naive_rate = naive_features(paths[:naive_clips])
    mfcc_and_mel(np.zeros((1, 16000), np.float32))  # warm-up outside the timing, as for the naive loop
    start = time.perf_counter()
    table = featurize_files(paths, workers=workers, progress=False)
    fast_rate = len(paths) / (time.perf_counter() - start)
    assert table.ok.all(), table.errors[:3]
    n = len(naive_mfcc)
    mfcc_diff = np.abs(table.mfcc[:n] - naive_mfcc).max()
    mel_diff = np.abs(table.mel[:n] - naive_mel)
    positive = naive_mel > 0
    mel_rel = (mel_diff[positive] / naive_mel[positive]).max()
    mel_rel_peak = (mel_diff / naive_mel.max(axis=1, keepdims=True)).max()
    mode = f"workers={workers}" if workers is not None else "default workers"
    print(f"{name}: {len(paths)} clips | naive loop {naive_rate:.0f} clips/s (on {n}) | "
          f"featurize_files ({mode}) {fast_rate:.0f} clips/s | ratio {fast_rate / naive_rate:.1f}x | "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  max |MFCC diff| {mfcc_diff:.2e} dB | max mel relative diff {mel_rel:.2e} "
          f"(per element), {mel_rel_peak:.2e} (relative to the clip's peak)")
    return {"naive": naive_rate, "fast": fast_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic-clips", type=int, default=5000)
    parser.add_argument("--naive-clips", type=int, default=500, help="clips timed in the naive loop")
    parser.add_argument("--workers", type=int, default=None, help="featurize_files workers (default: CPUs)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs (default workers: in-process below 2000 files, else one per CPU)")

    commands = SHARED_DATA / "speech_commands_v0.01_sample"
    if commands.is_dir():
        compare("Speech Commands sample", sorted(commands.glob("*/*.wav")), args.naive_clips, args.workers)
    else:
        print(f"{commands} absent: real-speech part skipped")

    with tempfile.TemporaryDirectory(prefix="spatial_ae_bench_") as folder:
        start = time.perf_counter()
        paths = write_synthetic_wavs(Path(folder), args.synthetic_clips)
        print(f"generated {len(paths)} WAVs in {time.perf_counter() - start:.1f} s")
        compare("synthetic", paths, args.naive_clips, args.workers)


if __name__ == "__main__":
    main()
