"""Read WAV clips as the 1 s, 16 kHz mono float32 arrays the features expect."""

from __future__ import annotations

import re
import struct
from math import gcd
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000

_REEXPORT_FIX = "Fix: re-export it as 16-bit PCM WAV or delete it; it will be skipped."
# libsndfile logs e.g. "data : 32000 (should be 15978)" when the data chunk is cut short.
_SHORT_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file and the fix."""


def load_clip(path) -> np.ndarray:
    """Read a WAV file as float32 (16000,): 16 kHz mono, first second, zero-padded.

    Plain, complete 16-bit PCM WAVs are parsed with numpy (4x faster); anything
    else goes through soundfile (24/32-bit PCM, float, extensible headers...).
    The scale is libsndfile's (int16 / 32768 for 16-bit PCM), i.e. the values
    ``librosa.load(path, sr=None)`` returns for a 16 kHz file. Raises AudioError.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AudioError(f"clip {path}: file not found. Fix: check the path or the data folder.") from None
    except OSError as error:
        raise AudioError(f"clip {path}: cannot be read ({error}). Fix: check its permissions.") from None
    if not data:
        raise AudioError(f"clip {path}: empty file (0 bytes). {_REEXPORT_FIX}")
    pcm16 = _parse_pcm16_wav(data)
    if pcm16 is not None:  # fast path, same values as soundfile (int16 / 32768)
        samples, sample_rate = pcm16
        return to_clip(samples, sample_rate, source=str(path))
    try:
        with soundfile.SoundFile(str(path)) as wav:
            sample_rate = wav.samplerate
            _check_not_truncated(wav, path)
            # Read 1 s plus a 0.1 s margin for the resampling filter, not whole long files.
            samples = wav.read(frames=sample_rate + sample_rate // 10 + 1,
                               dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"clip {path}: not a readable WAV file ({error}). {_REEXPORT_FIX}") from None
    return to_clip(samples, sample_rate, source=str(path))


def to_clip(samples: np.ndarray, sample_rate: int, source: str = "<array>") -> np.ndarray:
    """Normalise in-memory audio (n,) or (n, channels) to float32 (16000,) at 16 kHz.

    Channels are averaged, other rates are resampled with ``resample_poly``,
    longer audio keeps its first second and shorter audio is zero-padded at the end.
    """
    samples = np.asarray(samples)
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise AudioError(f"clip {source}: invalid sample rate {sample_rate}. {_REEXPORT_FIX}")
    if samples.ndim not in (1, 2):
        raise AudioError(f"clip {source}: expected (samples,) or (samples, channels) audio, "
                         f"got shape {samples.shape}. Fix: pass a mono or multichannel waveform.")
    if samples.shape[0] == 0 or samples.size == 0:
        raise AudioError(f"clip {source}: zero-length audio. {_REEXPORT_FIX}")
    samples = samples[:sample_rate + sample_rate // 10]  # 1 s plus a margin for resampling
    if np.issubdtype(samples.dtype, np.signedinteger):  # PCM: int16 / 32768, like libsndfile
        samples = samples.astype(np.float32) / np.float32(2 ** (8 * samples.dtype.itemsize - 1))
    elif not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"clip {source}: unsupported sample type {samples.dtype}. "
                         "Fix: pass float samples in [-1, 1] or signed PCM integers.")
    elif not np.isfinite(samples).all():
        raise AudioError(f"clip {source}: contains NaN or infinite samples. {_REEXPORT_FIX}")
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly  # imported on demand: scipy.signal loads slowly

        divisor = gcd(sample_rate, SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // divisor, sample_rate // divisor)
        samples = samples.astype(np.float32, copy=False)
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    used = min(CLIP_SAMPLES, samples.shape[0])
    clip[:used] = samples[:used]
    return clip


def _check_not_truncated(wav: soundfile.SoundFile, path: Path) -> None:
    """Raise AudioError when the data chunk holds fewer bytes than the header declares."""
    match = _SHORT_DATA_CHUNK.search(wav.extra_info)
    declared, present = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if present < declared < 0x7FFFFFFF:  # streaming writers put 0x7FFFFFFF.. for "unknown"
        raise AudioError(f"clip {path}: truncated WAV (header declares {declared} data bytes, "
                         f"file holds {present}). {_REEXPORT_FIX}")



def _parse_pcm16_wav(data: bytes) -> tuple[np.ndarray, int] | None:
    """Samples (n, channels) int16 and rate of a plain, complete 16-bit PCM WAV, else None.

    Everything else (24/32-bit, float, extensible headers, damaged files) is left
    to libsndfile; this only skips its per-file overhead for the common case.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= len(data):
        chunk_id = data[position:position + 4]
        size = int.from_bytes(data[position + 4:position + 8], "little")
        body = position + 8
        if chunk_id == b"fmt " and size >= 16 and body + 16 <= len(data):
            fmt = struct.unpack_from("<HHIIHH", data, body)  # tag, channels, rate, _, _, bits
        elif chunk_id == b"data":
            if fmt is None or fmt[0] != 1 or fmt[5] != 16 or fmt[1] < 1 or body + size > len(data):
                return None
            channels = fmt[1]
            frames = size // (2 * channels)
            samples = np.frombuffer(data, dtype="<i2", count=frames * channels, offset=body)
            return samples.reshape(frames, channels), fmt[2]
        position = body + size + (size & 1)
    return None
