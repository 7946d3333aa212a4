"""Default corpus: the 30 Speech Commands v0.01 words, synthesised offline with eSpeak NG.

eSpeak NG comes from the ``espeakng-loader`` wheel (shared library plus voice data) and is
driven through ``ctypes``.  The corpus has the Google Speech Commands layout, so the same
loader reads it and the real corpus.
"""

from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import tempfile
import threading

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

from spatial_ae.data import corpus

WORDS_V001: tuple[str, ...] = (
    "bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy",
    "house", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "wow", "yes", "zero",
)

SAMPLE_RATE = 16000
CORPUS_VERSION = "v1"

# English voices shipped in espeakng-loader's data (lang/gmw), en-Shaw (Shavian script) left out.
BASE_VOICES = (
    "en", "en-us", "en-gb-x-rp", "en-029", "en-gb-scotland",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc",
)
# Voice variants (voices/!v) that sound like people; robotic and novelty ones left out.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "croak", "whisper", "klatt", "klatt2", "klatt3",
    "Andy", "Annie", "Gene", "Lee", "Michael", "Reed", "adam", "aunty", "benjamin",
    "caleb", "david", "ed", "edward", "grandma", "grandpa", "ian", "john", "linda",
    "max", "norbert", "paul", "quincy", "rob", "robert", "steph", "travis", "zac",
)
PITCH_RANGE = (20, 80)  # espeakPITCH, 0..100
RATE_RANGE = (120, 220)  # words per minute

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# eSpeak keeps synthesis state between utterances in C statics (pitch-flutter phase, echo
# buffer, gain control, noise generator), so a word's samples depend on what was said before.
# For reproducible output each session loads a private copy of the library afresh and unloads
# it afterwards; the copy is made once per process.  The lock serialises sessions.
_lock = threading.RLock()
_library_copy: pathlib.Path | None = None
_ESPEAK_PATH_LIMIT = 160  # eSpeak NG's data-path buffer (N_PATH_HOME) on POSIX
_chunks: list[np.ndarray] = []
_libc = ctypes.CDLL(None) if os.name == "posix" else None
if _libc is not None:
    _libc.srand.argtypes = [ctypes.c_uint]


def _collect_samples(wav, num_samples, _events):
    """eSpeak synthesis callback: keep the int16 samples, return 0 to continue."""
    if num_samples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    return 0


_CALLBACK = _SYNTH_CALLBACK(_collect_samples)


def _private_library() -> pathlib.Path:
    """Path of this process's own copy of the eSpeak NG shared library (call with ``_lock`` held).

    Beside it, ``espeak-ng-data`` links to the package's voices: eSpeak NG keeps its data path in a 160-byte
    buffer, and the path inside a virtualenv (MLflow's, for one) can be longer.
    """
    global _library_copy
    if _library_copy is None:
        import espeakng_loader

        source = pathlib.Path(espeakng_loader.get_library_path())
        folder = pathlib.Path(tempfile.mkdtemp(prefix="spatial_ae-espeak-"))
        atexit.register(shutil.rmtree, folder, True)
        shutil.copyfile(source, folder / source.name)
        (folder / "espeak-ng-data").symlink_to(espeakng_loader.get_data_path(), target_is_directory=True)
        if len(str(folder / "espeak-ng-data" / "phontab").encode()) >= _ESPEAK_PATH_LIMIT:
            raise RuntimeError(f"eSpeak NG cannot read its voices through {folder}: the path is too long for it "
                               f"({_ESPEAK_PATH_LIMIT} bytes at most); set TMPDIR to a shorter folder")
        _library_copy = folder / source.name
    return _library_copy


@contextlib.contextmanager
def _espeak_session():
    """Yield ``say(word, voice, pitch, rate, noise_seed)`` backed by a freshly loaded eSpeak NG."""
    with _lock:
        lib = ctypes.CDLL(str(_private_library()), mode=ctypes.RTLD_LOCAL)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]

        def say(word: str, voice: str, pitch: int, rate: int, noise_seed: int = 0):
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"unknown eSpeak voice {voice!r}")
            lib.espeak_SetParameter(_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            lib.espeak_SetParameter(_RANGE, 50, 0)
            lib.espeak_ng_SetRandSeed(int(noise_seed))  # breath noise
            if _libc is not None:
                _libc.srand(int(noise_seed) & 0xFFFFFFFF)  # Klatt voices draw noise from libc rand()
            text = word.encode("utf-8")
            _chunks.clear()
            if lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, _CHARS_UTF8, None, None) != 0:
                raise RuntimeError(f"espeak_Synth failed for {word!r}")
            lib.espeak_Synchronize()
            samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
            _chunks.clear()
            return samples.astype(np.float32) / 32768.0, sample_rate

        data_path = str(_private_library().parent / "espeak-ng-data").encode()
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        try:
            if sample_rate <= 0:
                raise RuntimeError(f"espeak_Initialize failed ({sample_rate})")
            lib.espeak_SetSynthCallback(_CALLBACK)
            yield say
        finally:
            lib.espeak_Terminate()
            unload = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
            if unload is not None:
                unload(lib._handle)


def synthesize_word(word: str, voice: str, pitch: int, rate: int) -> tuple[np.ndarray, int]:
    """Say ``word`` with an eSpeak voice such as ``"en-us+f2"``; return float32 mono and its rate.

    Output depends only on the arguments (a fresh eSpeak is loaded for each call).
    """
    with _espeak_session() as say:
        return say(word, voice, pitch, rate)


def _speaker(seed: int, index: int) -> dict:
    """Speaker ``index`` of a seed: an 8-hex-digit id, a voice+variant, a pitch and a rate."""
    speaker_id = hashlib.sha1(f"spatial_ae-{seed}-{index}".encode()).hexdigest()[:8]
    rng = np.random.default_rng([seed, index, 1])
    voice = f"{BASE_VOICES[rng.integers(len(BASE_VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
    return {
        "id": speaker_id,
        "voice": voice,
        "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        "rate": int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
        "split": corpus.which_set(f"{speaker_id}_nohash_0.wav"),
    }


def _split_counts(clips_per_word: int) -> dict[str, int]:
    """Clips per word in each split: about 10/10/80 %, at least one validation and one test
    clip when there are 3 or more clips per word."""
    held_out = max(1, round(clips_per_word * 0.1)) if clips_per_word >= 3 else 0
    return {"validation": held_out, "testing": held_out, "training": clips_per_word - 2 * held_out}


def _speaker_pools(clips_per_word: int, seed: int) -> dict[str, list[dict]]:
    """Speakers grouped by their hash split, each group twice as large as a word needs.

    A word's speakers are drawn per split (stratified), so every word has validation and
    testing clips even in a tiny corpus, while the split stays a pure function of the
    speaker id, as in the official corpus.
    """
    need = _split_counts(clips_per_word)
    pools: dict[str, list[dict]] = {name: [] for name in need}
    index = 0
    while any(len(pools[name]) < 2 * need[name] for name in need):
        speaker = _speaker(seed, index)
        pools[speaker["split"]].append(speaker)
        index += 1
    return pools


def _trim_silence(audio: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold`` of the peak."""
    loud = np.flatnonzero(np.abs(audio) > threshold * np.abs(audio).max(initial=1e-9))
    return audio[loud[0]: loud[-1] + 1] if loud.size else audio


def _noise(rng: np.random.Generator, length: int, pink: bool) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise."""
    white = rng.standard_normal(length)
    if pink:
        spectrum = np.fft.rfft(white)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
        spectrum[0] = 0
        white = np.fft.irfft(spectrum, length)
    return white / (np.sqrt(np.mean(white**2)) + 1e-12)


@functools.lru_cache(maxsize=1)
def _resampling_filter() -> np.ndarray:
    """The FIR filter ``resample_poly(x, 320, 441)`` designs on each call, designed once."""
    return firwin(2 * 10 * 441 + 1, 1.0 / 441, window=("kaiser", 5.0))


def _make_clip(say, word: str, speaker: dict, rng: np.random.Generator) -> np.ndarray:
    """One 1 s, 16 kHz clip: synthesis, resampling, trimming, random gain, onset and noise."""
    noise_seed = int(rng.integers(2**31))
    audio, rate = say(word, speaker["voice"], speaker["pitch"], speaker["rate"], noise_seed)
    if rate != 22050:
        raise RuntimeError(f"unexpected eSpeak sample rate {rate}")
    audio = resample_poly(audio, 320, 441, window=_resampling_filter())
    audio = _trim_silence(audio)[:SAMPLE_RATE]
    audio = audio * (rng.uniform(0.2, 0.9) / (np.abs(audio).max() + 1e-9))
    clip = np.zeros(SAMPLE_RATE)
    onset = int(rng.integers(0, SAMPLE_RATE - audio.size + 1))
    clip[onset: onset + audio.size] = audio
    speech_rms = np.sqrt(np.mean(audio**2))
    snr_db = rng.uniform(20, 40)
    clip += _noise(rng, SAMPLE_RATE, pink=bool(rng.integers(2))) * speech_rms * 10 ** (-snr_db / 20)
    return np.clip(clip, -1.0, 1.0)


def _write_wav(path: pathlib.Path, audio: np.ndarray) -> None:
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _generate(root: pathlib.Path, clips_per_word: int, seed: int, progress: bool) -> None:
    """Write the whole corpus into ``root``."""
    from tqdm.auto import tqdm

    pools = _speaker_pools(clips_per_word, seed)
    need = _split_counts(clips_per_word)
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    bar = tqdm(total=len(WORDS_V001) * clips_per_word, desc="synthetic corpus",
               unit="clip", disable=not progress)
    for word_index, word in enumerate(WORDS_V001):
        (root / word).mkdir()
        pick = np.random.default_rng([seed, word_index, 0])
        speakers = [pools[name][i] for name in ("training", "validation", "testing")
                    for i in pick.choice(len(pools[name]), need[name], replace=False)]
        with _espeak_session() as say:  # fresh eSpeak state for each word: reproducible
            for clip_index, speaker in enumerate(speakers):
                rng = np.random.default_rng([seed, word_index, clip_index + 1])
                name = f"{word}/{speaker['id']}_nohash_0.wav"
                _write_wav(root / name, _make_clip(say, word, speaker, rng))
                if speaker["split"] in lists:
                    lists[speaker["split"]].append(name)
                bar.update()
    bar.close()
    for split, names in lists.items():
        (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in sorted(names)))

    noise_dir = root / "_background_noise_"
    noise_dir.mkdir()
    rng = np.random.default_rng([seed, len(WORDS_V001), 0])
    for name, pink in (("white_noise.wav", False), ("pink_noise.wav", True)):
        _write_wav(noise_dir / name, 0.1 * _noise(rng, 10 * SAMPLE_RATE, pink).clip(-9, 9))

    n_speakers = sum(len(p) for p in pools.values())
    (root / "README.md").write_text(
        f"# Synthetic Speech Commands ({CORPUS_VERSION})\n\n"
        f"Generated by `spatial_ae.data.synthetic.synthetic_corpus(clips_per_word={clips_per_word}, "
        f"seed={seed})` with eSpeak NG (espeakng-loader).\n\n"
        f"- {len(WORDS_V001)} words of Speech Commands v0.01, {clips_per_word} clips each, one per speaker.\n"
        f"- {n_speakers} speakers: eSpeak voice+variant, pitch {PITCH_RANGE}, rate {RATE_RANGE} wpm;\n"
        f"  voices {', '.join(BASE_VOICES)};\n  variants {', '.join(VARIANTS)}.\n"
        "- Clips: 22,050 Hz synthesis resampled to 16 kHz, silence trimmed, random gain and onset\n"
        "  in a 1 s window, white or pink noise at 20-40 dB SNR, 16-bit PCM.\n"
        "- Splits: `which_set` hash of the speaker id (as in the official corpus); each word's\n"
        "  speakers are drawn so it has about 10 % validation and 10 % testing clips.\n"
        "- `_background_noise_`: 10 s of white and of pink noise.\n"
    )


def synthetic_corpus(clips_per_word: int = 100, seed: int = 0,
                     cache_dir: pathlib.Path | None = None, progress: bool = True) -> pathlib.Path:
    """Return the root of a Speech-Commands-layout synthetic corpus, generating it once into the cache."""
    if clips_per_word < 1:
        raise ValueError("clips_per_word must be at least 1")
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else corpus.cache_dir()
    target = cache_dir / "synthetic" / f"{CORPUS_VERSION}-cpw{clips_per_word}-seed{seed}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _generate(tmp, clips_per_word, seed, progress)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp)  # another process finished first: keep its corpus
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
