"""Corpora in Google Speech Commands layout, and the paper's splits.

One folder per word, `testing_list.txt` and `validation_list.txt` at the root. The paper's splits:
unlabelled = clips in neither list, labelled training pool = the validation list, test = the testing list;
without the lists, Speech Commands' own rule splits by a hash of the speaker (`which_set`). Where corpora come
from (synthetic, downloads, FSDD, folders): `spatial_ae.data.sources`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatial_ae.errors import UserError

log = logging.getLogger(__name__)

UNLABELLED, TRAIN, TEST = "unlabelled", "train", "test"
SPLITS = (UNLABELLED, TRAIN, TEST)
LIST_FILES = {TRAIN: "validation_list.txt", TEST: "testing_list.txt"}
UNKNOWN_SILENCE = ("_unknown_", "_silence_")  # the 12-class protocol's extra classes, where a corpus has them


class CorpusError(UserError):
    """A corpus that cannot be read; the message names the path and the fix."""


@dataclass(frozen=True)
class Clip:
    """One clip: its word, its path relative to the corpus root and its split."""

    root: Path
    path: str
    word: str
    split: str

    @property
    def file(self) -> Path:
        return self.root / self.path

    def audio(self) -> tuple[np.ndarray, int]:
        """The clip as 16 kHz mono float32, padded or trimmed to 1 s, and its sample rate."""
        from spatial_ae.data.audio import SAMPLE_RATE, load_clip

        return load_clip(self.file), SAMPLE_RATE


@dataclass
class Corpus:
    name: str
    root: Path
    source: str
    words: tuple[str, ...]
    clips: list[Clip]
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Clip]:
        return [clip for clip in self.clips if clip.split == name]

    def fingerprint(self) -> str:
        """Identity of the corpus content: the listed clips, their splits and file sizes."""
        digest = hashlib.sha1()
        for clip in self.clips:
            digest.update(f"{clip.path}\t{clip.split}\t{clip.file.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


def read_corpus_dir(root: Path, name: str | None = None, source: str | None = None,
                    hash_splits_if_unlisted: bool = True, include_unknown_silence: bool = False) -> Corpus:
    """Read a Speech Commands layout folder; `_background_noise_`, hidden folders and (unless
    `include_unknown_silence`) `_unknown_` and `_silence_` are not words.

    Without split lists, splits come from the speaker hash, unless `hash_splits_if_unlisted` is False
    (then every clip is unlabelled, for callers that split the clips themselves)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} does not exist or is not a folder. "
                          f"Fix: pass a folder with one sub-folder of WAV clips per word.")
    warnings: list[str] = []
    files_by_word: dict[str, list[str]] = {}
    kept = UNKNOWN_SILENCE if include_unknown_silence else ()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p.name in kept or not p.name.startswith(("_", ".")))):
        try:
            named_wav = [f for f in folder.iterdir() if f.suffix.lower() == ".wav"]
        except PermissionError:
            raise CorpusError(f"word folder {folder} cannot be read (permission denied). Fix: make it readable "
                              f"(chmod -R u+rX {folder}) or move it out of {root}.") from None
        wavs = sorted(f"{folder.name}/{f.name}" for f in named_wav if f.is_file())
        if len(named_wav) > len(wavs):
            warnings.append(f"{len(named_wav) - len(wavs)} entries named .wav in {folder} are not regular files "
                            f"(broken links, link loops, FIFOs, folders); skipped")
        if wavs:
            files_by_word[folder.name] = wavs
        else:
            warnings.append(f"word folder {folder} has no .wav clips; skipped")
    left_out = [name for name in UNKNOWN_SILENCE if name not in kept and (root / name).is_dir()]
    if left_out:
        warnings.append(f"{', '.join(left_out)} in {root} left out (not keywords); -P include_unknown_silence=true "
                        f"keeps them as classes (the 12-class protocol)")
    if not files_by_word:
        raise CorpusError(f"corpus folder {root} has no word folders with .wav clips. "
                          f"Fix: lay it out as <root>/<word>/<clip>.wav (Speech Commands layout).")

    all_paths = {path for paths in files_by_word.values() for path in paths}
    split_of = _read_split_lists(root, all_paths, warnings, hash_splits_if_unlisted)
    clips = [Clip(root, path, word, split_of.get(path, UNLABELLED))
             for word, paths in files_by_word.items() for path in paths]
    for message in warnings:
        log.warning(message)
    if include_unknown_silence:
        name = f"{name or root.name}+unknown_silence"
    return Corpus(name=name or root.name, root=root, source=source or str(root),
                  words=tuple(files_by_word), clips=clips, warnings=warnings)


def _read_split_lists(root: Path, all_paths: set[str], warnings: list[str],
                      hash_splits_if_unlisted: bool = True) -> dict[str, str]:
    """Map listed clip paths to their split; missing lists are made from the speaker hash, as Google did."""
    split_of: dict[str, str] = {}
    missing_lists = [name for name in LIST_FILES.values() if not (root / name).is_file()]
    if missing_lists and not hash_splits_if_unlisted:
        return split_of
    if missing_lists:
        warnings.append(
            f"{', '.join(missing_lists)} not found in {root}: splits made from a hash of the speaker "
            f"(Speech Commands' own rule, 10% validation, 10% testing). Add the lists to fix the splits yourself.")
        official = {"validation": TRAIN, "testing": TEST}
        return {path: official[s] for path in all_paths if (s := which_set(path)) in official}
    for split, list_name in LIST_FILES.items():
        try:
            text = (root / list_name).read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            raise CorpusError(f"{root / list_name} is not UTF-8 text (byte {error.object[error.start]:#04x} at "
                              f"offset {error.start}). Fix: re-save it as UTF-8, one clip path <word>/<clip>.wav "
                              f"a line.") from None
        except PermissionError:
            raise CorpusError(f"{root / list_name} cannot be read (permission denied). Fix: make it readable "
                              f"(chmod u+r {root / list_name}).") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        absent = [line for line in lines if line not in all_paths and not line.startswith(("_", "."))]
        if absent:
            warnings.append(f"{list_name}: {len(absent)} of {len(lines)} entries name clips not in {root} "
                            f"(e.g. {absent[0]}); ignored")
        for line in lines:
            if line in all_paths:
                if split_of.setdefault(line, split) != split:
                    raise CorpusError(f"{line} is in both {LIST_FILES[TRAIN]} and {LIST_FILES[TEST]} of {root}. "
                                      f"Fix: keep it in one list.")
    return split_of


def cache_dir() -> Path:
    """Where corpora are made or downloaded once: ``$SPATIAL_AE_CACHE``, else ``$XDG_CACHE_HOME/spatial_ae``, else
    ``~/.cache/spatial_ae``."""
    if os.environ.get("SPATIAL_AE_CACHE"):
        return Path(os.environ["SPATIAL_AE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "spatial_ae"


def which_set(filename: str, validation_percentage: float = 10, testing_percentage: float = 10) -> str:
    """Speech Commands split of a file, from a hash of its speaker (port of TF ``input_data.py``)."""
    max_num_wavs_per_class = 2**27 - 1
    base_name = os.path.basename(filename)
    hash_name = re.sub(r"_nohash_.*$", "", base_name)
    hash_name_hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage_hash = (int(hash_name_hashed, 16) % (max_num_wavs_per_class + 1)) * (
        100.0 / max_num_wavs_per_class
    )
    if percentage_hash < validation_percentage:
        return "validation"
    if percentage_hash < testing_percentage + validation_percentage:
        return "testing"
    return "training"
