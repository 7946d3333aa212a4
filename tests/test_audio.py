"""spatial_ae.data.audio: WAV files of many formats become 1 s, 16 kHz mono float32 clips."""

import os
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from spatial_ae.data.audio import CLIP_SAMPLES, SAMPLE_RATE, AudioError, load_clip, to_clip

SHARED_DATA = Path(os.environ.get("SPATIAL_AE_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


def sine(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)


def peak_frequency(clip: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(clip * np.hanning(len(clip))))
    return np.fft.rfftfreq(len(clip), 1 / SAMPLE_RATE)[spectrum.argmax()]


def test_16bit_16khz_equals_librosa_load(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, sine(440, 1.0, 16000) + 0.01 * np.random.default_rng(0).standard_normal(16000),
                    16000, subtype="PCM_16")
    clip = load_clip(path)
    expected, rate = librosa.load(path, sr=None)
    assert rate == 16000
    assert clip.dtype == np.float32 and clip.shape == (CLIP_SAMPLES,)
    np.testing.assert_array_equal(clip, expected)  # int16 / 32768, bit for bit
    np.testing.assert_array_equal(clip * 32768, np.round(clip * 32768))


def test_stereo_is_mixed_down(tmp_path):
    left, right = sine(440, 1.0, 16000), sine(1000, 1.0, 16000, amplitude=0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_clip(path), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled_keeping_frequency(tmp_path, rate):
    path = tmp_path / f"tone_{rate}.wav"
    soundfile.write(path, sine(1000, 1.0, rate), rate, subtype="PCM_16")
    clip = load_clip(path)
    assert clip.shape == (CLIP_SAMPLES,) and clip.dtype == np.float32
    assert abs(peak_frequency(clip) - 1000) <= 1.0
    # amplitude kept (away from the edges, where the filter sees the zero padding)
    assert abs(np.abs(clip[1000:15000]).max() - 0.5) < 0.01


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_24", "PCM_32"])
def test_float_and_wide_pcm(tmp_path, subtype):
    wave = sine(300, 1.0, 16000, amplitude=0.7)
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(path, wave, 16000, subtype=subtype)
    clip = load_clip(path)
    np.testing.assert_allclose(clip, wave, atol=1e-6)
    np.testing.assert_array_equal(clip, librosa.load(path, sr=None)[0])


def test_longer_is_trimmed_and_shorter_is_padded(tmp_path):
    wave = sine(200, 2.5, 16000)
    soundfile.write(tmp_path / "long.wav", wave, 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "short.wav", wave[:4000], 16000, subtype="PCM_16")
    long_clip = load_clip(tmp_path / "long.wav")
    short_clip = load_clip(tmp_path / "short.wav")
    np.testing.assert_allclose(long_clip, wave[:16000], atol=1 / 32768)
    np.testing.assert_allclose(short_clip[:4000], wave[:4000], atol=1 / 32768)
    assert short_clip.shape == (CLIP_SAMPLES,) and not short_clip[4000:].any()


def test_long_44k_file_is_trimmed_after_resampling(tmp_path):
    path = tmp_path / "long44.wav"
    soundfile.write(path, sine(1000, 3.0, 44100), 44100, subtype="PCM_16")
    clip = load_clip(path)
    assert clip.shape == (CLIP_SAMPLES,)
    assert abs(np.abs(clip[-2000:]).max() - 0.5) < 0.01  # no fade at the 1 s cut


def test_to_clip_in_memory(tmp_path):
    stereo_int16 = (np.stack([sine(440, 0.5, 16000)] * 2, axis=1) * 32767).astype(np.int16)
    clip = to_clip(stereo_int16, 16000)
    np.testing.assert_allclose(clip[:8000], stereo_int16[:, 0] / 32768, atol=1e-7)
    assert not clip[8000:].any()
    assert abs(peak_frequency(to_clip(sine(1000, 1.0, 48000), 48000)) - 1000) <= 1.0
    with pytest.raises(AudioError, match="zero-length"):
        to_clip(np.zeros(0, np.float32), 16000, source="mic")


def expect_error(path: Path, reason: str) -> str:
    with pytest.raises(AudioError) as raised:
        load_clip(path)
    message = str(raised.value)
    assert str(path) in message and reason in message and "Fix:" in message
    return message


def test_missing_and_empty_files(tmp_path):
    expect_error(tmp_path / "nowhere.wav", "file not found")
    (tmp_path / "empty.wav").write_bytes(b"")
    expect_error(tmp_path / "empty.wav", "empty file")


def test_truncated_wavs(tmp_path):
    soundfile.write(tmp_path / "full.wav", sine(440, 1.0, 16000), 16000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "header_only.wav").write_bytes(data[:44])
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "header_only.wav", "truncated WAV")
    expect_error(tmp_path / "half.wav", "truncated WAV")
    (tmp_path / "cut_header.wav").write_bytes(data[:30])
    expect_error(tmp_path / "cut_header.wav", "not a readable WAV")


def test_non_audio_and_nan(tmp_path):
    (tmp_path / "notes.wav").write_text("these are meeting notes, not audio\n" * 20)
    expect_error(tmp_path / "notes.wav", "not a readable WAV")
    wave = sine(440, 1.0, 16000).astype(np.float32)
    wave[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    expect_error(tmp_path / "nan.wav", "NaN")
    wave[100] = np.inf
    soundfile.write(tmp_path / "inf.wav", wave, 16000, subtype="FLOAT")
    expect_error(tmp_path / "inf.wav", "infinite")


def test_real_fsdd_clips_at_8khz():
    recordings = SHARED_DATA / "fsdd" / "recordings"
    if not recordings.is_dir():
        pytest.skip(f"shared data absent: {recordings}")
    for path in sorted(recordings.glob("*.wav"))[:20]:
        original, rate = librosa.load(path, sr=None)
        assert rate == 8000
        clip = load_clip(path)
        assert clip.shape == (CLIP_SAMPLES,) and np.isfinite(clip).all()
        seconds = min(len(original) / 8000, 1.0)
        used = int(seconds * 16000)
        assert not clip[used + 1:].any()  # zero-padded after the recording
        # same energy per second as the 8 kHz original (speech is below 4 kHz)
        original_power = np.mean(original[: int(seconds * 8000)] ** 2)
        assert np.mean(clip[:used] ** 2) == pytest.approx(original_power, rel=0.05)


def test_real_speech_commands_clips_equal_librosa_load():
    folder = SHARED_DATA / "speech_commands_v0.01_sample"
    if not folder.is_dir():
        pytest.skip(f"shared data absent: {folder}")
    for path in sorted(folder.glob("*/*.wav"))[::15]:
        original, rate = librosa.load(path, sr=None)
        assert rate == 16000
        clip = load_clip(path)
        used = min(len(original), CLIP_SAMPLES)
        np.testing.assert_array_equal(clip[:used], original[:used])
        assert not clip[used:].any()


def wav_header(rate: int, data_bytes: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header declaring `rate` Hz and a `data_bytes` data chunk."""
    import struct

    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * 2 * channels) & 0xFFFFFFFF, 2 * channels, 16)
    return (b"RIFF" + (36 + data_bytes).to_bytes(4, "little") + b"WAVE" + b"fmt " + (16).to_bytes(4, "little")
            + fmt + b"data" + data_bytes.to_bytes(4, "little"))


def load_with_timeout(path, seconds=10.0):
    """load_clip in a thread, so that a regression (a blocking open) fails the test instead of hanging it."""
    import threading

    outcome = {}

    def target():
        try:
            outcome["clip"] = load_clip(path)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load_clip({path}) still running after {seconds} s"
    return outcome


def test_fifo_named_wav_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    outcome = load_with_timeout(fifo, 5)
    assert isinstance(outcome.get("error"), AudioError)
    assert "pipe.wav" in str(outcome["error"]) and "FIFO" in str(outcome["error"])


def test_devices_and_folders_are_refused(tmp_path):
    outcome = load_with_timeout("/dev/zero", 5)
    assert isinstance(outcome.get("error"), AudioError) and "/dev/zero" in str(outcome["error"])
    assert "device" in str(outcome["error"])
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match="folder"):
        load_clip(tmp_path / "folder.wav")
    (tmp_path / "link.wav").symlink_to("/dev/zero")  # links are followed, then refused
    with pytest.raises(AudioError, match="device"):
        load_clip(tmp_path / "link.wav")


@pytest.mark.parametrize("rate", [4294967291, 4000037, 999, 0])
def test_absurd_header_sample_rates_are_refused_fast(tmp_path, rate):
    import time

    path = tmp_path / f"rate_{rate}.wav"
    path.write_bytes(wav_header(rate, 32000) + np.zeros(16000, "<i2").tobytes())
    start = time.perf_counter()
    outcome = load_with_timeout(path, 10)
    assert isinstance(outcome.get("error"), AudioError), outcome
    assert "sample rate" in str(outcome["error"]) and f"rate_{rate}.wav" in str(outcome["error"])
    assert time.perf_counter() - start < 1.0


def test_odd_sample_rate_resamples_fast(tmp_path):
    import time

    path = tmp_path / "odd.wav"
    soundfile.write(path, sine(1000, 1.0, 383999), 383999, subtype="PCM_16")
    import scipy.signal  # noqa: F401 - its import (seconds on a busy machine) is not the resampling
    start = time.perf_counter()
    clip = load_clip(path)
    assert time.perf_counter() - start < 1.0
    assert abs(peak_frequency(clip) - 1000) <= 2.0


def test_huge_sparse_wav_is_refused_without_reading_it(tmp_path):
    import resource

    path = tmp_path / "huge.wav"
    with open(path, "wb") as file:
        file.write(wav_header(16000, 3 * 2 ** 30 - 44))
        file.truncate(3 * 2 ** 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AudioError, match="huge.wav: 3221225472 bytes, more than"):
        load_clip(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: no GB read


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])  # the numpy parser and the soundfile path
def test_only_the_first_second_of_a_long_file_is_read(tmp_path, subtype):
    import resource

    path = tmp_path / "long.wav"
    soundfile.write(path, sine(440, 2.0, 16000), 16000, subtype=subtype)
    expected = load_clip(path)
    data_bytes = path.stat().st_size - 44
    big = 200 * 2 ** 20  # under MAX_FILE_BYTES: accepted, but only ~1.1 s of it is read
    with open(path, "r+b") as file:
        file.seek(4)
        file.write((big - 8).to_bytes(4, "little"))
        file.seek(40)
        file.write((big - 44).to_bytes(4, "little"))
        file.truncate(big)
    assert data_bytes < big
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.testing.assert_array_equal(load_clip(path), expected)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: not 200 MB


def test_absurd_float_samples_are_refused():
    with pytest.raises(AudioError, match="not audio"):
        to_clip(np.full(16000, 1e20, np.float32), SAMPLE_RATE, max_abs=1e3)
    # without max_abs (load_clip for featurize, which skips clips whose features overflow): kept
    assert to_clip(np.full(16000, 1e20, np.float32), SAMPLE_RATE).max() == np.float32(1e20)
    with pytest.raises(AudioError, match="NaN or infinite"):
        to_clip(np.full(16000, np.inf), SAMPLE_RATE)
