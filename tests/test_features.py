"""spatial_ae.data.features: batched features equal the paper's per-clip librosa calls.

Tolerances, measured on 3,522 clips (all 3,300 shared real clips, tones, chirps,
impulses, silence, random noise mixtures at -120..0 dB). Both STFTs run in float32
(librosa transforms in float64 and rounds to complex64): the FFT error is ~1e-7 of
each frame's energy, so it only shows in bins far below the clip's peak.
- MFCC (dB scale; the 80 dB floor hides most of it): worst 1.2e-3 dB on a
  full-scale chirp, 2.7e-4 dB on real speech; every element is within
  1e-3 dB + 1.5e-5 * |value|. Tested at atol 1e-3, rtol 5e-5.
- mel power: every element is within 1e-5 * |value| + 9.4e-9 * (the clip's peak
  mel value); relative error 3.6e-5 within 40 dB of the peak, 1.6e-4 within 60 dB.
  Tested at rtol 1e-5 plus 2e-8 of the clip's peak (bins more than 77 dB below the
  peak, where float32 FFT noise dominates, are compared absolutely).
"""

import os
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from spatial_ae.data.audio import load_clip
from spatial_ae.data.features import (MEL_DIM, MEL_SHAPE, MFCC_DIM, MFCC_SHAPE, FeatureTable, featurize_files,
                                      mfcc_and_mel, mfcc_only)

SHARED_DATA = Path(os.environ.get("SPATIAL_AE_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
MFCC_TOLERANCE = dict(rtol=5e-5, atol=1e-3)
MEL_RTOL, MEL_PEAK_ATOL = 1e-5, 2e-8
# One clip computed in batches of different sizes: the FFT's SIMD grouping and BLAS
# blocking change float32 rounding only (measured: 6e-5 dB MFCC, 4e-7 relative mel).
SAME_CLIP_MFCC = dict(rtol=0, atol=2e-4)
SAME_CLIP_MEL = dict(rtol=1e-6, atol=0)
TIME = np.arange(16000) / 16000


def librosa_reference(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paper's per-clip calls, flattened row-major."""
    mfcc = [librosa.feature.mfcc(y=clip, sr=16000).flatten() for clip in clips]
    mel = [librosa.feature.melspectrogram(y=clip, sr=16000, n_fft=1025).flatten() for clip in clips]
    return np.array(mfcc), np.array(mel)


def assert_equals_librosa(clips: np.ndarray) -> None:
    mfcc, mel = mfcc_and_mel(clips)
    expected_mfcc, expected_mel = librosa_reference(clips)
    assert mfcc.shape == (len(clips), MFCC_DIM) and mel.shape == (len(clips), MEL_DIM)
    assert mfcc.dtype == np.float32 and mel.dtype == np.float32
    np.testing.assert_allclose(mfcc, expected_mfcc, **MFCC_TOLERANCE)
    assert_mel_close(mel, expected_mel)


def assert_mel_close(mel: np.ndarray, expected: np.ndarray) -> None:
    """|mel - expected| <= MEL_RTOL * |expected| + MEL_PEAK_ATOL * the clip's peak."""
    allowed = MEL_RTOL * np.abs(expected) + MEL_PEAK_ATOL * expected.max(axis=1, keepdims=True)
    excess = np.abs(mel - expected) - allowed
    assert (excess <= 0).all(), f"mel differs beyond tolerance at {np.argwhere(excess > 0)[:5].tolist()}"
    np.testing.assert_array_equal(mel == 0, expected == 0)  # silent frames stay exactly zero


def shared_clips(pattern: str, count: int) -> np.ndarray:
    folder = SHARED_DATA / pattern.split("/")[0]
    if not folder.is_dir():
        pytest.skip(f"shared data absent: {folder}")
    paths = sorted(SHARED_DATA.glob(pattern))
    return np.stack([load_clip(path) for path in paths[:: max(1, len(paths) // count)][:count]])


def test_shapes_and_constants():
    assert MFCC_SHAPE == (20, 32) and MEL_SHAPE == (128, 32)
    assert MFCC_DIM == 640 and MEL_DIM == 4096


@pytest.mark.parametrize("n_fft", [2048, 1025])
def test_filterbank_and_window_equal_librosa(n_fft):
    from scipy.signal import get_window

    from spatial_ae.data.features import _mel_filters, _Spectrogram

    np.testing.assert_array_equal(_mel_filters(n_fft), librosa.filters.mel(sr=16000, n_fft=n_fft))
    window = get_window("hann", n_fft, fftbins=True).astype(np.float32)
    np.testing.assert_array_equal(_Spectrogram.build(n_fft).window, window)


def test_equal_to_librosa_on_speech_commands():
    assert_equals_librosa(shared_clips("speech_commands_v0.01_sample/*/*.wav", 20))


def test_equal_to_librosa_on_fsdd_resampled():
    assert_equals_librosa(shared_clips("fsdd/recordings/*.wav", 10))


def synthetic_clips() -> np.ndarray:
    rng = np.random.default_rng(0)
    tone = 0.5 * np.sin(2 * np.pi * 440 * TIME)
    chirp = np.sin(2 * np.pi * (100 * TIME + 3900 * TIME ** 2))
    noise = 0.1 * rng.standard_normal(16000)
    padded = np.where(TIME < 0.3, 0.8 * np.sin(2 * np.pi * 1200 * TIME), 0.0)  # silence after 0.3 s
    impulse = np.zeros(16000)
    impulse[8000] = 1.0
    near_silent = 1e-6 * rng.standard_normal(16000)
    near_silent[4000:4400] += 3e-3 * np.sin(2 * np.pi * 300 * TIME[:400])
    return np.array([tone, chirp, noise, padded, impulse, near_silent, np.zeros(16000),
                     tone + noise, 1e-4 * tone], dtype=np.float32)


def test_equal_to_librosa_on_synthetic_clips():
    clips = synthetic_clips()
    assert_equals_librosa(clips)
    # the 80 dB floor is really exercised: the near-silent clip's dB spectrum is clipped
    near_silent = librosa.power_to_db(librosa.feature.melspectrogram(y=clips[5], sr=16000))
    assert np.isclose(near_silent.min(), near_silent.max() - 80) and near_silent.max() - 80 > -100


def test_top_db_floor_is_per_clip_not_per_batch():
    clips = synthetic_clips()
    loud_and_quiet = clips[[1, 5, 8]]  # full-scale chirp, near-silent clip, -80 dB tone
    mfcc, _ = mfcc_and_mel(loud_and_quiet)
    expected = librosa_reference(loud_and_quiet)[0]
    np.testing.assert_allclose(mfcc, expected, **MFCC_TOLERANCE)
    # a batched librosa call clips the quiet clips 80 dB below the *batch* maximum: not the reference
    batched = librosa.feature.mfcc(y=loud_and_quiet, sr=16000).reshape(3, -1)
    assert np.abs(batched[1] - expected[1]).max() > 10
    # and each clip's features do not depend on its neighbours
    np.testing.assert_allclose(mfcc[1], mfcc_and_mel(loud_and_quiet[1:2])[0][0], **SAME_CLIP_MFCC)


def test_mfcc_only_matches_mfcc_and_mel():
    clips = synthetic_clips()
    np.testing.assert_array_equal(mfcc_only(clips), mfcc_and_mel(clips)[0])  # same batches: same bits
    with pytest.raises(ValueError, match="16000"):
        mfcc_only(np.zeros((2, 8000), np.float32))


def write_corpus(folder: Path) -> list[Path]:
    """Nine good WAVs (several formats) and one text file named .wav."""
    paths = []
    for index, clip in enumerate(synthetic_clips()):
        path = folder / f"clip_{index}.wav"
        soundfile.write(path, clip, 16000, subtype="PCM_16" if index % 2 else "FLOAT")
        paths.append(path)
    bad = folder / "notes.wav"
    bad.write_text("not audio")
    paths.insert(4, bad)
    return paths


def test_featurize_files_parallel_equals_in_process_and_skips_bad_files(tmp_path):
    paths = write_corpus(tmp_path)
    names = [f"word/{path.name}" for path in paths]
    serial = featurize_files(paths, names, workers=0, chunk_size=3, progress=False)
    parallel = featurize_files(paths, names, workers=2, chunk_size=3, progress=False)
    assert isinstance(serial, FeatureTable)
    expected_ok = np.array([path.name != "notes.wav" for path in paths])
    for table in (serial, parallel):
        np.testing.assert_array_equal(table.ok, expected_ok)
        assert [name for name, _ in table.errors] == ["word/notes.wav"]
        assert "not a readable WAV" in table.errors[0][1]
        assert not table.mfcc[4].any() and not table.mel[4].any()
    np.testing.assert_allclose(parallel.mfcc, serial.mfcc, **SAME_CLIP_MFCC)
    np.testing.assert_allclose(parallel.mel, serial.mel, **SAME_CLIP_MEL)
    good = [path for path in paths if path.name != "notes.wav"]
    mfcc, mel = mfcc_and_mel(np.stack([load_clip(path) for path in good]))
    np.testing.assert_allclose(serial.mfcc[expected_ok], mfcc, **SAME_CLIP_MFCC)
    np.testing.assert_allclose(serial.mel[expected_ok], mel, **SAME_CLIP_MEL)


def test_featurize_files_keep_mel_keeps_only_selected_rows_in_order(tmp_path):
    paths = write_corpus(tmp_path)
    full = featurize_files(paths, workers=0, progress=False)
    keep = np.zeros(len(paths), dtype=bool)
    keep[[1, 4, 7, 9]] = True  # 4 is the unreadable file
    for workers in (0, 2):
        table = featurize_files(paths, workers=workers, chunk_size=4, progress=False, keep_mel=keep)
        assert table.mel.shape == (4, MEL_DIM)
        np.testing.assert_allclose(table.mel, full.mel[keep], **SAME_CLIP_MEL)
        assert not table.mel[1].any()  # the unreadable file keeps its (zero) row
        np.testing.assert_allclose(table.mfcc, full.mfcc, **SAME_CLIP_MFCC)
        assert table.errors[0][0] == str(paths[4])  # no relative names: the path itself
    with pytest.raises(ValueError, match="keep_mel"):
        featurize_files(paths, keep_mel=keep[:3], progress=False)
