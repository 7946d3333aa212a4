"""The Speech Commands layout reader and the paper's splits."""
from pathlib import Path

import numpy as np
import pytest
import soundfile

from spatial_ae.data.corpus import TEST, TRAIN, UNKNOWN_SILENCE, UNLABELLED, CorpusError, read_corpus_dir, which_set
from spatial_ae.data.sources import open_corpus
from spatial_ae.data.synthetic import WORDS_V001


def write_wav(path: Path, seconds=1.0, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")


def make_corpus(root: Path, words=("no", "yes"), speakers=("aaaa1111", "bbbb2222", "cccc3333")):
    for word in words:
        for speaker in speakers:
            write_wav(root / word / f"{speaker}_nohash_0.wav")
    write_wav(root / "_background_noise_" / "noise.wav", seconds=3)
    return root


def test_splits_follow_the_lists(tmp_path):
    root = make_corpus(tmp_path / "c")
    (root / "validation_list.txt").write_text("no/aaaa1111_nohash_0.wav\nyes/aaaa1111_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/bbbb2222_nohash_0.wav\n")
    corpus = read_corpus_dir(root)
    assert corpus.words == ("no", "yes")  # _background_noise_ is not a word
    splits = {clip.path: clip.split for clip in corpus.clips}
    assert splits == {"no/aaaa1111_nohash_0.wav": TRAIN, "yes/aaaa1111_nohash_0.wav": TRAIN,
                      "no/bbbb2222_nohash_0.wav": TEST, "yes/bbbb2222_nohash_0.wav": UNLABELLED,
                      "no/cccc3333_nohash_0.wav": UNLABELLED, "yes/cccc3333_nohash_0.wav": UNLABELLED}
    audio, rate = corpus.clips[0].audio()
    assert rate == 16000 and audio.shape == (16000,) and audio.dtype == np.float32


def test_list_entries_naming_missing_files_are_counted_not_fatal(tmp_path):
    root = make_corpus(tmp_path / "c")
    (root / "validation_list.txt").write_text("no/aaaa1111_nohash_0.wav\nno/gone_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("")
    corpus = read_corpus_dir(root)
    assert any("1 of 2 entries" in w and "validation_list.txt" in w for w in corpus.warnings)
    assert len(corpus.split(TRAIN)) == 1


def test_missing_lists_fall_back_to_the_speaker_hash(tmp_path):
    root = make_corpus(tmp_path / "c", speakers=[f"{i:08x}" for i in range(40)])
    corpus = read_corpus_dir(root)
    assert any("speaker" in w for w in corpus.warnings)
    expected = {"validation": TRAIN, "testing": TEST, "training": UNLABELLED}
    for clip in corpus.clips:
        assert clip.split == expected[which_set(clip.path)]


def test_empty_word_folder_is_skipped_with_a_warning(tmp_path):
    root = make_corpus(tmp_path / "c")
    (root / "empty").mkdir()
    corpus = read_corpus_dir(root)
    assert "empty" not in corpus.words
    assert any("empty" in w for w in corpus.warnings)


def test_missing_corpus_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(CorpusError, match="dataset=/path/to/folder") as error:
        open_corpus(str(tmp_path / "nowhere"))
    assert "nowhere" in str(error.value)
    (tmp_path / "flat").mkdir()
    with pytest.raises(CorpusError, match="Speech Commands layout"):
        read_corpus_dir(tmp_path / "flat")


def test_real_speech_commands_sample(speech_commands_sample):
    corpus = read_corpus_dir(speech_commands_sample)
    assert len(corpus.words) == 30 and len(corpus.clips) == 300
    assert (len(corpus.split(TEST)), len(corpus.split(TRAIN))) == (51, 44)  # entries present here, per its README
    assert len(corpus.split(UNLABELLED)) == 300 - 51 - 44


def test_synthetic_corpus_through_open_corpus(small_synthetic_corpus):
    corpus = open_corpus("synthetic", synthetic_clips_per_word=12)
    assert corpus.root == small_synthetic_corpus.resolve()
    assert corpus.words == WORDS_V001
    assert all(len(corpus.split(split)) > 0 for split in (UNLABELLED, TRAIN, TEST))
    assert corpus.fingerprint() == open_corpus("synthetic", synthetic_clips_per_word=12).fingerprint()


def speakers_by_split(corpus) -> dict[str, set[str]]:
    return {split: {Path(clip.path).stem.split("_")[1] for clip in corpus.split(split)}
            for split in (UNLABELLED, TRAIN, TEST)}


def test_fsdd_holds_speakers_out_and_the_pair_can_be_chosen(fsdd):
    default = open_corpus(f"fsdd:{fsdd}")
    assert speakers_by_split(default) == {UNLABELLED: {"george", "jackson", "lucas", "nicolas"},
                                          TRAIN: {"theo"}, TEST: {"yweweler"}}
    chosen = open_corpus(f"fsdd:{fsdd}:labelled=jackson,test=theo")
    assert speakers_by_split(chosen) == {UNLABELLED: {"george", "lucas", "nicolas", "yweweler"},
                                         TRAIN: {"jackson"}, TEST: {"theo"}}
    assert [len(chosen.split(s)) for s in (UNLABELLED, TRAIN, TEST)] == [2000, 500, 500]
    assert chosen.words == default.words and len(chosen.words) == 10
    assert chosen.fingerprint() != default.fingerprint()  # another feature set, never a reused one
    assert chosen.name == "fsdd-labelled-jackson-test-theo"


@pytest.mark.parametrize("choice, named", [("labelled=theo,test=theo", "both theo"),
                                            ("labelled=bob", "'labelled=bob'"),
                                            ("speaker=theo", "'speaker=theo'")])
def test_bad_fsdd_speaker_choice_names_it_and_the_fix(tmp_path, choice, named):
    with pytest.raises(CorpusError) as error:
        open_corpus(f"fsdd:{tmp_path}:{choice}")
    assert named in str(error.value)
    assert f"Fix: write fsdd:{tmp_path}:labelled=<speaker>,test=<speaker>" in str(error.value)
    assert "george, jackson, lucas, nicolas, theo, yweweler" in str(error.value)


def test_unknown_and_silence_are_classes_only_when_asked(speech_commands_dev):
    """The dev subset's `_unknown_` and `_silence_` folders: left out by default (with a warning that says how to
    keep them, and their list entries not miscounted as missing), classes with include_unknown_silence."""
    keywords = open_corpus(str(speech_commands_dev))
    assert len(keywords.words) == 10 and not set(UNKNOWN_SILENCE) & set(keywords.words)
    assert any("include_unknown_silence=true" in message for message in keywords.warnings)
    assert not any("entries name clips not in" in message for message in keywords.warnings)

    twelve = open_corpus(str(speech_commands_dev), include_unknown_silence=True)
    assert set(twelve.words) == set(keywords.words) | set(UNKNOWN_SILENCE)
    assert twelve.name.endswith("+unknown_silence") and twelve.fingerprint() != keywords.fingerprint()
    listed = {line.strip() for name in ("validation_list.txt", "testing_list.txt")
              for line in (speech_commands_dev / name).read_text().splitlines() if line.strip()}
    by_split = {clip.path: clip.split for clip in twelve.clips}
    unknown_listed = [path for path in listed if path.startswith(UNKNOWN_SILENCE)]
    assert unknown_listed and all(by_split[path] != "unlabelled" for path in unknown_listed)
