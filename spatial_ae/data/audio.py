"""Read WAV clips as the 1 s, 16 kHz mono float32 arrays the features expect."""

from __future__ import annotations

import os
import re
import stat
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile

from spatial_ae.errors import UserError

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000

_REEXPORT_FIX = "Fix: re-export it as 16-bit PCM WAV or delete it; it will be skipped."
# libsndfile logs e.g. "data : 32000 (should be 15978)" when the data chunk is cut short.
_SHORT_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


# Limits on what a clip may be: files are opened only when regular and at most MAX_FILE_BYTES (a 1 s clip
# is ~32 kB; 256 MB is ~2 h of 16 kHz 16-bit mono), only ~1.1 s of audio is read, and the header's rate is
# checked before reading or resampling (an absurd rate would make resampling exhaust memory or run for long).
MAX_FILE_BYTES = 256 * 2 ** 20
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
MAX_CHANNELS = 64
# Finite samples larger than this are not audio (they give NaN embeddings); float audio is about [-1, 1].
MAX_ABS_SAMPLE = 1e3
_HEADER_BYTES = 64 * 1024  # first read: the RIFF header and the usual metadata chunks before `data`
_MAX_RESAMPLE_DENOMINATOR = 1000  # 44.1 kHz is 160/441, exact; odd rates (e.g. 383999 Hz) are approximated


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file and the fix."""


def load_clip(path, max_abs: float | None = None) -> np.ndarray:
    """Read a WAV file as float32 (16000,): 16 kHz mono, first second, zero-padded.

    Plain, complete 16-bit PCM WAVs are parsed with numpy, skipping libsndfile's
    per-file overhead; anything else goes through soundfile (24/32-bit PCM, float,
    extensible headers...).
    The scale is libsndfile's (int16 / 32768 for 16-bit PCM), i.e. the values
    ``librosa.load(path, sr=None)`` returns for a 16 kHz file. Raises AudioError.

    Only regular files of at most MAX_FILE_BYTES are opened (no FIFO, device or folder),
    only the header and about 1.1 s of audio are read, and the header's sample rate
    must be within MIN_SAMPLE_RATE..MAX_SAMPLE_RATE before any sample is read. `max_abs`: as `to_clip`'s
    (what the encoder takes: MAX_ABS_SAMPLE), so that a caller skips such a file as it skips an unreadable one.
    """
    path = Path(path)
    try:
        _check_regular_file(os.stat(path), path)  # follows links; a FIFO is never opened
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise AudioError(f"clip {path}: file not found. Fix: check the path or the data folder.") from None
    except OSError as error:
        raise AudioError(f"clip {path}: cannot be read ({error.strerror}). Fix: check its permissions.") from None
    with os.fdopen(fd, "rb") as file:
        size = _check_regular_file(os.fstat(file.fileno()), path)  # the file opened, not a swapped one
        if size == 0:
            raise AudioError(f"clip {path}: empty file (0 bytes). {_REEXPORT_FIX}")
        try:
            head = file.read(min(size, _HEADER_BYTES))
            pcm16 = _parse_pcm16_wav(head, size, file, path)
        except OSError as error:
            raise AudioError(f"clip {path}: cannot be read ({error.strerror}). Fix: check the file.") from None
        if pcm16 is not None:  # fast path, same values as soundfile (int16 / 32768)
            samples, sample_rate = pcm16
            return to_clip(samples, sample_rate, source=str(path), max_abs=max_abs)
        try:
            file.seek(0)
            with soundfile.SoundFile(file) as wav:
                sample_rate = wav.samplerate
                _check_rate(sample_rate, path)
                if not 1 <= wav.channels <= MAX_CHANNELS:
                    raise AudioError(f"clip {path}: {wav.channels} channels (at most {MAX_CHANNELS}). "
                                     f"{_REEXPORT_FIX}")
                _check_not_truncated(wav, path)
                # Read 1 s plus a 0.1 s margin for the resampling filter, not whole long files.
                samples = wav.read(frames=sample_rate + sample_rate // 10 + 1,
                                   dtype="float32", always_2d=True)
        except AudioError:
            raise
        except (RuntimeError, ValueError, TypeError, OSError, soundfile.LibsndfileError) as error:
            reason = getattr(error, "error_string", None) or str(error)  # not "Error opening <fd 14>"
            raise AudioError(f"clip {path}: not a readable WAV file ({reason}). {_REEXPORT_FIX}") from None
    return to_clip(samples, sample_rate, source=str(path), max_abs=max_abs)


def _check_regular_file(info: os.stat_result, path: Path) -> int:
    """The size of a regular file of at most MAX_FILE_BYTES; AudioError for FIFOs, devices, folders, huge files."""
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a special file")
        raise AudioError(f"clip {path}: is {kind}, not a regular file. Fix: pass WAV files only.")
    if info.st_size > MAX_FILE_BYTES:
        raise AudioError(f"clip {path}: {info.st_size} bytes, more than the {MAX_FILE_BYTES} accepted for a "
                         f"1 s clip. Fix: cut it to the clip you want (e.g. sox in.wav out.wav trim 0 1).")
    return info.st_size


def _check_rate(sample_rate: int, source) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"clip {source}: sample rate {sample_rate} Hz outside {MIN_SAMPLE_RATE}.."
                         f"{MAX_SAMPLE_RATE} Hz. {_REEXPORT_FIX}")


def to_clip(samples: np.ndarray, sample_rate: int, source: str = "<array>",
            max_abs: float | None = None) -> np.ndarray:
    """Normalise in-memory audio (n,) or (n, channels) to float32 (16000,) at 16 kHz.

    Channels are averaged, other rates are resampled with ``resample_poly``,
    longer audio keeps its first second and shorter audio is zero-padded at the end.
    With `max_abs` (the pyfunc passes MAX_ABS_SAMPLE), float samples beyond it are refused;
    featurize instead skips and counts the clips whose features overflow.
    """
    samples = np.asarray(samples)
    sample_rate = int(sample_rate)
    _check_rate(sample_rate, source)
    if samples.ndim not in (1, 2):
        raise AudioError(f"clip {source}: expected (samples,) or (samples, channels) audio, "
                         f"got shape {samples.shape}. Fix: pass a mono or multichannel waveform.")
    if samples.shape[0] == 0 or samples.size == 0:
        raise AudioError(f"clip {source}: zero-length audio. {_REEXPORT_FIX}")
    if samples.ndim == 2 and samples.shape[1] > MAX_CHANNELS:
        raise AudioError(f"clip {source}: {samples.shape[1]} channels (at most {MAX_CHANNELS}). "
                         "Fix: pass (samples,) or (samples, channels) audio.")
    samples = samples[:sample_rate + sample_rate // 10]  # 1 s plus a margin for resampling
    if np.issubdtype(samples.dtype, np.signedinteger):  # PCM: int16 / 32768, like libsndfile
        samples = samples.astype(np.float32) / np.float32(2 ** (8 * samples.dtype.itemsize - 1))
    elif not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"clip {source}: unsupported sample type {samples.dtype}. "
                         "Fix: pass float samples in [-1, 1] or signed PCM integers.")
    elif not np.isfinite(samples).all():
        raise AudioError(f"clip {source}: contains NaN or infinite samples. {_REEXPORT_FIX}")
    elif max_abs is not None and np.abs(samples).max() > max_abs:
        raise AudioError(f"clip {source}: samples up to {float(np.abs(samples).max()):.3g}, not audio (float "
                         f"audio is about [-1, 1]; at most {max_abs:g} is accepted). "
                         "Fix: scale it to [-1, 1] or pass signed PCM integers.")
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly  # imported on demand: scipy.signal loads slowly

        # Exact for the usual rates; a bounded filter for odd ones (an exact ratio with a large denominator
        # would make a very long filter).
        ratio = Fraction(SAMPLE_RATE, sample_rate).limit_denominator(_MAX_RESAMPLE_DENOMINATOR)
        samples = resample_poly(samples, ratio.numerator, ratio.denominator)
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



def _parse_pcm16_wav(head: bytes, size: int, file, path: Path) -> tuple[np.ndarray, int] | None:
    """Samples (n, channels) int16 and rate of a plain, complete 16-bit PCM WAV, else None.

    `head` is the file's first bytes, `size` its size; only the first ~1.1 s of the data chunk is
    then read from `file`. Everything else (24/32-bit, float, extensible headers, damaged files,
    a `data` chunk past the first _HEADER_BYTES) is left to libsndfile; this only skips its
    per-file overhead for the common case. The rate is checked before any sample is read.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= len(head):
        chunk_id = head[position:position + 4]
        chunk_size = int.from_bytes(head[position + 4:position + 8], "little")
        body = position + 8
        if chunk_id == b"fmt " and chunk_size >= 16 and body + 16 <= len(head):
            fmt = struct.unpack_from("<HHIIHH", head, body)  # tag, channels, rate, _, _, bits
        elif chunk_id == b"data":
            if fmt is None or fmt[0] != 1 or fmt[5] != 16 or not 1 <= fmt[1] <= MAX_CHANNELS \
                    or body + chunk_size > size:
                return None
            channels, sample_rate = fmt[1], fmt[2]
            _check_rate(sample_rate, path)
            frames = min(chunk_size // (2 * channels), sample_rate + sample_rate // 10 + 1)
            end = body + frames * 2 * channels
            data = head
            if end > len(head):
                data = head + file.read(end - len(head))
                if len(data) < end:  # the file shrank while being read
                    return None
            samples = np.frombuffer(data, dtype="<i2", count=frames * channels, offset=body)
            return samples.reshape(frames, channels), sample_rate
        position = body + chunk_size + (chunk_size & 1)
    return None


def wav_files(inputs) -> list[Path]:
    """The WAV files a user names: a file, a folder (its .wav files, recursively) or a list of files."""
    if isinstance(inputs, (str, Path)):
        path = Path(inputs).expanduser()
        if not path.exists():
            raise UserError(f"inputs {path} does not exist. Fix: pass -P inputs=<a .wav file or a folder of them>.")
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix.lower() == ".wav" and f.is_file())
            if not files:
                raise UserError(f"folder {path} has no .wav files. Fix: pass a folder of WAV clips or one file.")
            return files
        return [path]
    files = [Path(item).expanduser() for item in inputs]
    if not files:
        raise UserError("inputs is an empty list. Fix: pass WAV files or a folder of them.")
    return files
