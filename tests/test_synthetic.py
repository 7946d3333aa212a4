"""Tests for spatial_ae.data.synthetic (tiny corpora generated into tmp_path)."""

import collections
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from spatial_ae.data import synthetic
from spatial_ae.data.corpus import cache_dir, which_set
from spatial_ae.data.synthetic import WORDS_V001, synthesize_word, synthetic_corpus

CLIPS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthetic_corpus(clips_per_word=CLIPS, seed=0, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _wav_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


def _read_list(root, name):
    return (root / name).read_text().split()


def test_words_are_speech_commands_v001():
    assert len(WORDS_V001) == 30 and list(WORDS_V001) == sorted(WORDS_V001)
    assert {"marvin", "sheila", "wow", "zero", "bed"} <= set(WORDS_V001)


def test_synthesize_word():
    audio, rate = synthesize_word("marvin", "en-us+f2", pitch=50, rate=170)
    assert rate == 22050 and audio.dtype == np.float32 and audio.ndim == 1
    assert 0.1 * rate < audio.size < 2 * rate and np.abs(audio).max() > 0.1
    with pytest.raises(ValueError):
        synthesize_word("yes", "no-such-voice", 50, 170)


def test_synthesize_word_does_not_depend_on_earlier_calls():
    # eSpeak keeps state between utterances; each call must start from a fresh library.
    first, _ = synthesize_word("sheila", "en-gb-x-rp+whisper", 40, 150)
    synthesize_word("dog", "en+caleb", 70, 210)
    again, _ = synthesize_word("sheila", "en-gb-x-rp+whisper", 40, 150)
    assert np.array_equal(first, again)


def test_synthesis_from_a_package_installed_deep_in_the_file_system(tmp_path):
    # eSpeak NG keeps its data path in a 160-byte buffer; a virtualenv's site-packages can be deeper than that.
    import espeakng_loader

    deep = tmp_path.joinpath(*["site-packages-of-a-long-virtualenv-path"] * 5)
    deep.mkdir(parents=True)
    (deep / "espeakng_loader").symlink_to(pathlib.Path(espeakng_loader.__file__).parent, target_is_directory=True)
    script = ("import sys, espeakng_loader, numpy as np\n"
              "from spatial_ae.data.synthetic import synthesize_word\n"
              "assert len(espeakng_loader.get_data_path()) > 160, espeakng_loader.get_data_path()\n"
              "np.save(sys.argv[1], synthesize_word('marvin', 'en-us+f2', pitch=50, rate=170)[0])\n")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(deep), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "marvin.npy")], env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    expected, _ = synthesize_word("marvin", "en-us+f2", pitch=50, rate=170)
    assert np.array_equal(np.load(tmp_path / "marvin.npy"), expected)


def test_layout(corpus):
    assert corpus.name == f"v1-cpw{CLIPS}-seed0" and corpus.parent.name == "synthetic"
    folders = {p.name for p in corpus.iterdir() if p.is_dir()}
    assert folders == set(WORDS_V001) | {"_background_noise_"}
    assert "seed" in (corpus / "README.md").read_text()
    assert len(list((corpus / "_background_noise_").glob("*.wav"))) >= 1
    for word in WORDS_V001:
        names = [p.name for p in (corpus / word).glob("*.wav")]
        assert len(names) == CLIPS
        assert all(len(n.split("_nohash_")[0]) == 8 and n.endswith("_nohash_0.wav") for n in names)
        int(names[0][:8], 16)  # hexadecimal speaker id
    for path in corpus.glob("*/*.wav"):
        if path.parent.name == "_background_noise_":
            continue
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)
        audio, _ = sf.read(path)
        assert np.abs(audio).max() > 0.1  # speech, not just noise


def test_split_lists_follow_speaker_hash(corpus):
    validation = _read_list(corpus, "validation_list.txt")
    testing = _read_list(corpus, "testing_list.txt")
    assert not set(validation) & set(testing)
    for name in validation + testing:
        assert (corpus / name).is_file()
    split_of_speaker = collections.defaultdict(set)
    per_word = collections.defaultdict(collections.Counter)
    for path in corpus.glob("*/*_nohash_*.wav"):
        name = f"{path.parent.name}/{path.name}"
        split = "validation" if name in validation else "testing" if name in testing else "training"
        assert split == which_set(name)
        split_of_speaker[path.name.split("_nohash_")[0]].add(split)
        per_word[path.parent.name][split] += 1
    assert all(len(splits) == 1 for splits in split_of_speaker.values())
    assert len(split_of_speaker) > CLIPS  # several speakers, shared between words
    for word in WORDS_V001:  # every word has all three splits, even in a tiny corpus
        assert per_word[word] == {"training": 4, "validation": 1, "testing": 1}


def test_which_set_matches_tensorflow():
    # The split depends only on the part before _nohash_.
    assert which_set("yes/0a7c2a8d_nohash_0.wav") == which_set("no/0a7c2a8d_nohash_3.wav")
    splits = collections.Counter(which_set(f"{i:08x}_nohash_0.wav") for i in range(4000))
    assert 0.07 < splits["validation"] / 4000 < 0.13 and 0.07 < splits["testing"] / 4000 < 0.13


def test_deterministic_for_a_seed(corpus, tmp_path):
    again = synthetic_corpus(clips_per_word=CLIPS, seed=0, cache_dir=tmp_path / "a", progress=False)
    assert again != corpus
    assert _wav_bytes(again) == _wav_bytes(corpus)
    assert (again / "testing_list.txt").read_text() == (corpus / "testing_list.txt").read_text()
    other = synthetic_corpus(clips_per_word=CLIPS, seed=1, cache_dir=tmp_path / "a", progress=False)
    assert other.name == f"v1-cpw{CLIPS}-seed1"
    assert _wav_bytes(other).keys() != _wav_bytes(corpus).keys()


def test_second_call_reuses_corpus(corpus, monkeypatch):
    mtimes = {p: p.stat().st_mtime_ns for p in corpus.rglob("*")}
    monkeypatch.setattr(synthetic, "_generate", lambda *a: pytest.fail("regenerated"))
    assert synthetic_corpus(clips_per_word=CLIPS, seed=0, cache_dir=corpus.parents[1], progress=False) == corpus
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*")} == mtimes


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_clip(*args):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return np.zeros(16000)

    monkeypatch.setattr(synthetic, "_make_clip", failing_clip)
    with pytest.raises(KeyboardInterrupt):
        synthetic_corpus(clips_per_word=3, cache_dir=tmp_path, progress=False)
    assert list((tmp_path / "synthetic").iterdir()) == []


def test_concurrent_generation_keeps_first_corpus(tmp_path, monkeypatch):
    target = tmp_path / "synthetic" / "v1-cpw3-seed0"
    real_generate = synthetic._generate

    def generate_while_another_process_finishes(root, *args):
        real_generate(root, *args)
        (target / "yes").mkdir(parents=True)  # the other process renamed its corpus first
        (target / "marker").write_text("first")

    monkeypatch.setattr(synthetic, "_generate", generate_while_another_process_finishes)
    assert synthetic_corpus(clips_per_word=3, cache_dir=tmp_path, progress=False) == target
    assert (target / "marker").read_text() == "first"
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [target.name]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SPATIAL_AE_CACHE", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SPATIAL_AE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "spatial_ae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == pathlib.Path.home() / ".cache" / "spatial_ae"
