"""Where a corpus comes from: each form of the `dataset` parameter is a source that opens a `Corpus`.

- `synthetic`: the embedded eSpeak NG corpus, made once in the cache folder.
- `speech_commands_v0.01`, `speech_commands_v0.02`: the official archives, downloaded once.
- `fsdd:/path/to/fsdd[:labelled=<speaker>,test=<speaker>]`: the Free Spoken Digit Dataset, split by speaker.
- a folder in Speech Commands layout.
A new source is an entry of SOURCES (and, for users, a line of the `dataset` parameter's help).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spatial_ae.data.corpus import TEST, TRAIN, UNLABELLED, Clip, Corpus, CorpusError, read_corpus_dir

SYNTHETIC = "synthetic"
DOWNLOADABLE = ("speech_commands_v0.01", "speech_commands_v0.02")
FSDD_PREFIX = "fsdd:"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_DEFAULT_LABELLED, FSDD_DEFAULT_TEST = "theo", "yweweler"


@dataclass(frozen=True)
class Source:
    """One form of the `dataset` parameter: whether a value has that form, and the corpus it names (`open` takes
    the dataset and open_corpus's options as keywords, using those it needs)."""
    matches: Callable[[str], bool]
    open: Callable[..., Corpus]


def _synthetic(dataset: str, synthetic_clips_per_word: int, seed: int, **_) -> Corpus:
    from spatial_ae.data.synthetic import synthetic_corpus

    root = synthetic_corpus(clips_per_word=synthetic_clips_per_word, seed=seed)
    return read_corpus_dir(root, name=f"synthetic-cpw{synthetic_clips_per_word}-seed{seed}", source=str(root))


def _fsdd(dataset: str, **_) -> Corpus:
    return read_fsdd(*parse_fsdd(dataset))


def _downloaded(dataset: str, include_unknown_silence: bool, **_) -> Corpus:
    from spatial_ae.data.download import SPEECH_COMMANDS_URLS, download_speech_commands

    return read_corpus_dir(download_speech_commands(dataset), name=dataset, source=SPEECH_COMMANDS_URLS[dataset],
                           include_unknown_silence=include_unknown_silence)


def _folder(dataset: str, include_unknown_silence: bool, **_) -> Corpus:
    return read_corpus_dir(Path(dataset).expanduser(), include_unknown_silence=include_unknown_silence)


SOURCES = (
    Source(lambda dataset: dataset == SYNTHETIC, _synthetic),
    Source(lambda dataset: dataset.startswith(FSDD_PREFIX), _fsdd),
    Source(lambda dataset: dataset in DOWNLOADABLE, _downloaded),
    Source(lambda dataset: Path(dataset).expanduser().exists(), _folder),
)


def open_corpus(dataset: str, synthetic_clips_per_word: int = 100, seed: int = 0,
                include_unknown_silence: bool = False) -> Corpus:
    """The corpus named by the `dataset` parameter (the first source it matches).
    `include_unknown_silence` keeps the `_unknown_` and `_silence_` folders as classes (12-class protocol)."""
    for source in SOURCES:
        if source.matches(dataset):
            return source.open(dataset, synthetic_clips_per_word=synthetic_clips_per_word, seed=seed,
                               include_unknown_silence=include_unknown_silence)
    raise CorpusError(
        f"dataset {dataset!r} is neither 'synthetic', one of {', '.join(DOWNLOADABLE)}, {FSDD_PREFIX}/path, nor an "
        f"existing directory. Fix: pass -P dataset=/path/to/folder with one sub-folder of WAVs per word.")


def parse_fsdd(dataset: str) -> tuple[Path, str, str]:
    """`fsdd:/path[:labelled=<speaker>,test=<speaker>]` -> (path, labelled speaker, test speaker)."""
    text = dataset[len(FSDD_PREFIX):]
    root, _, choice = text.rpartition(":")
    if "=" not in choice:
        return Path(text), FSDD_DEFAULT_LABELLED, FSDD_DEFAULT_TEST
    fix = (f"Fix: write {FSDD_PREFIX}{root}:labelled=<speaker>,test=<speaker>, two different speakers among "
           f"{', '.join(FSDD_SPEAKERS)}")
    speakers = {"labelled": FSDD_DEFAULT_LABELLED, "test": FSDD_DEFAULT_TEST}
    for item in choice.split(","):
        key, _, value = item.partition("=")
        if key.strip() not in speakers or value.strip() not in FSDD_SPEAKERS:
            raise CorpusError(f"dataset {dataset!r}: {item!r} is not labelled=<speaker> or test=<speaker>. {fix}")
        speakers[key.strip()] = value.strip()
    if speakers["labelled"] == speakers["test"]:
        raise CorpusError(f"dataset {dataset!r}: the labelled and the test speaker are both {speakers['test']}. {fix}")
    return Path(root), speakers["labelled"], speakers["test"]


def fsdd_split_of_speaker(labelled: str = FSDD_DEFAULT_LABELLED, test: str = FSDD_DEFAULT_TEST) -> dict[str, str]:
    """Each FSDD speaker's split: `labelled` is the labelled pool, `test` the test set, the other four unlabelled."""
    return {speaker: TRAIN if speaker == labelled else TEST if speaker == test else UNLABELLED
            for speaker in FSDD_SPEAKERS}


def read_fsdd(root: Path, labelled: str = FSDD_DEFAULT_LABELLED, test: str = FSDD_DEFAULT_TEST) -> Corpus:
    """The Free Spoken Digit Dataset (`<root>/recordings/<digit>_<speaker>_<n>.wav`), split by speaker so that
    no speaker is in two splits: `labelled` (theo by default) is the labelled pool (500 clips, 50 per digit),
    `test` (yweweler) the test set, the other four speakers unlabelled (2,000 clips). Words are the digit names.
    Other speakers' clips are left out (with a warning)."""
    root = Path(root).expanduser().resolve()
    recordings = root / "recordings"
    if not recordings.is_dir():
        raise CorpusError(f"{recordings} does not exist. Fix: pass -P dataset=fsdd:/path/to/fsdd, the folder "
                          f"holding recordings/<digit>_<speaker>_<n>.wav")
    split_of_speaker = fsdd_split_of_speaker(labelled, test)
    clips, others = [], set()
    for file in sorted(recordings.glob("*.wav")):
        digit, speaker, *_ = file.stem.split("_", 2) + ["", ""]
        if speaker not in split_of_speaker or not digit.isdigit() or int(digit) > 9:
            others.add(speaker or file.name)
            continue
        clips.append(Clip(root, f"recordings/{file.name}", DIGIT_WORDS[int(digit)], split_of_speaker[speaker]))
    warnings = [f"{root}: clips of unknown speakers or digits left out: {', '.join(sorted(others))}"] if others else []
    if not clips:
        raise CorpusError(f"{recordings} has no <digit>_<speaker>_<n>.wav clip of the known speakers "
                          f"({', '.join(FSDD_SPEAKERS)})")
    default = (labelled, test) == (FSDD_DEFAULT_LABELLED, FSDD_DEFAULT_TEST)
    name = "fsdd-by-speaker" if default else f"fsdd-labelled-{labelled}-test-{test}"
    return Corpus(name=name, root=root, source=str(root), words=DIGIT_WORDS, clips=clips, warnings=warnings)
