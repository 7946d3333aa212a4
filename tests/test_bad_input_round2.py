"""GitHub issue 22, bad input round 2: split lists, sweep lists, parameters refused before any work, metric names.

Each case stops before any training with a one-line `error:` naming the file or parameter and the fix, or is
counted in the corpus warnings; never a traceback, never a silently wrong result.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from spatial_ae.data.corpus import TRAIN, UNLABELLED, CorpusError, read_corpus_dir
from tests.test_bad_input import assert_one_line_error, good_corpus, run_cli


# 1. split lists and word folders

def test_split_list_with_a_byte_order_mark_keeps_its_first_entry(tmp_path):
    root = good_corpus(tmp_path / "corpus")
    listed = (root / "validation_list.txt").read_text()
    (root / "validation_list.txt").write_bytes(listed.encode("utf-8-sig"))
    corpus = read_corpus_dir(root)
    first = listed.splitlines()[0]
    assert {clip.path: clip.split for clip in corpus.clips}[first] == TRAIN
    assert not any("entries name clips not in" in w for w in corpus.warnings)


def test_split_list_that_is_not_utf8_names_the_file_and_the_fix(tmp_path):
    root = good_corpus(tmp_path / "corpus")
    (root / "testing_list.txt").write_bytes(b"no/caf\xe9_nohash_0.wav\n")
    with pytest.raises(CorpusError, match=r"testing_list.txt is not UTF-8.*Fix: re-save it as UTF-8"):
        read_corpus_dir(root)


def test_unreadable_word_folder_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    root = good_corpus(tmp_path / "corpus")
    real_iterdir = Path.iterdir

    def iterdir(path):
        if path == root / "yes":  # chmod does not stop root, so the denial is simulated
            raise PermissionError(13, "Permission denied", str(path))
        return real_iterdir(path)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(CorpusError, match=r"word folder .*yes cannot be read.*Fix: make it readable"):
        read_corpus_dir(root)


def test_wav_entries_that_are_not_regular_files_are_counted(tmp_path):
    root = good_corpus(tmp_path / "corpus")
    folder = root / "no"
    (folder / "dangling.wav").symlink_to(folder / "gone.wav")
    (folder / "loop_a.wav").symlink_to(folder / "loop_b.wav")
    (folder / "loop_b.wav").symlink_to(folder / "loop_a.wav")
    os.mkfifo(folder / "pipe.wav")
    corpus = read_corpus_dir(root)
    assert not any(name in clip.path for clip in corpus.clips for name in ("dangling", "loop_", "pipe"))
    assert any(f"4 entries named .wav in {folder} are not regular files" in w for w in corpus.warnings), corpus.warnings
    assert sum(clip.split == UNLABELLED for clip in corpus.clips) == 8


# 2. the sweep's lists, declared in params.py

@pytest.mark.parametrize("name, raw, words", [
    ("recipes", "paper,nonsense", ["recipes='nonsense'", "must be one of", "raw_dtw", "-P recipes="]),
    ("position_loss_weights", "abc", ["position_loss_weights='abc'", "not a number"]),
    ("position_loss_weights", "nan", ["position_loss_weights='nan'", "finite"]),
    ("position_loss_weights", "1,-0.5", ["position_loss_weights='-0.5'", "below its minimum 0"]),
    ("labelled_per_word", "-3", ["labelled_per_word='-3'", "below its minimum 0"]),
    ("labelled_per_word", "5,2.5", ["labelled_per_word='2.5'", "whole number"]),
    ("labelled_per_word", "5,,10", ["labelled_per_word='5,,10'", "empty item"]),
])
def test_bad_sweep_lists_are_refused_by_params(name, raw, words):
    from spatial_ae.params import ParameterError, parse_step_params

    with pytest.raises(ParameterError) as error:
        parse_step_params("sweep", {name: raw})
    for word in words:
        assert word in str(error.value), str(error.value)


def test_sweep_lists_are_parsed_to_lists():
    from spatial_ae.params import parse_step_params

    params = parse_step_params("sweep", {"recipes": " balanced, dtw ", "position_loss_weights": "0,0.5",
                                         "labelled_per_word": "1,2"})
    assert params["recipes"] == ["balanced", "dtw"] and params["position_loss_weights"] == [0.0, 0.5]
    assert params["labelled_per_word"] == [1, 2]
    assert parse_step_params("sweep", {})["recipes"] == ["paper", "balanced", "dtw"]


@pytest.mark.parametrize("arguments, words", [
    (["--recipes", "paper,nonsense"], ["recipes='nonsense'", "must be one of"]),
    (["--labelled_per_word", "-3"], ["labelled_per_word='-3'", "below its minimum 0"]),
])
def test_bad_sweep_lists_on_the_command_line(arguments, words):
    result = run_cli("sweep", *arguments, timeout=120)
    assert result.returncode == 2
    assert_one_line_error(result, *words)


# 3. refused before any work

def test_results_path_naming_an_existing_file_is_refused(tmp_path):
    from spatial_ae.params import ParameterError, parse_step_params

    taken = tmp_path / "results"
    taken.write_text("not a folder")
    for step in ("main", "sweep"):
        with pytest.raises(ParameterError, match=r"results_path=.*is an existing file.*Fix|results_path=.*existing file"):
            parse_step_params(step, {"results_path": str(taken)})
    parse_step_params("main", {"results_path": str(tmp_path)})  # an existing folder is fine


def test_results_path_file_on_the_command_line(tmp_path):
    taken = tmp_path / "results.csv"
    taken.write_text("x")
    result = run_cli("sweep", "--results_path", str(taken), timeout=120)
    assert result.returncode == 2
    assert_one_line_error(result, "results_path=", "existing file")


def test_seed_plus_simulations_beyond_32_bits_is_refused():
    from spatial_ae.params import ParameterError, parse_step_params

    with pytest.raises(ParameterError, match=r"seed=4294967295 with num_simulations=2.*-P seed=4294967294"):
        parse_step_params("main", {"seed": "4294967295", "num_simulations": "2"})
    with pytest.raises(ParameterError, match="4294967295"):
        parse_step_params("pretrain", {"featurize_run_id": "r", "seed": "4294967296"})
    assert parse_step_params("main", {"seed": "4294967294", "num_simulations": "2"})["seed"] == 4294967294


def test_more_parallel_simulations_than_cores_is_refused(monkeypatch):
    from spatial_ae.params import ParameterError, parse_step_params

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for step in ("main", "sweep"):
        with pytest.raises(ParameterError, match=r"parallel_simulations=3 is more than this machine's 2 CPU cores"):
            parse_step_params(step, {"parallel_simulations": "3"})
        assert parse_step_params(step, {"parallel_simulations": "2"})["parallel_simulations"] == 2


def test_evaluate_with_an_encoder_that_does_not_exist(sqlite_tracking):
    result = run_cli("evaluate", "--featurize_run_id", "0123456789abcdef", "--encoder_uri",
                     "models:/no-such-encoder/7", timeout=300)
    assert result.returncode == 2
    assert_one_line_error(result, "cannot load models:/no-such-encoder/7", "Fix:", "encoder_uri=")


def test_more_anchors_than_unlabelled_clips_is_refused_before_training(sqlite_tracking, tmp_path):
    from mlflow.tracking import MlflowClient

    from spatial_ae.settings import Recipe
    from spatial_ae.steps.pretrain import check_anchors

    with pytest.raises(Exception, match=r"num_anchors=9 is more than the 8 unlabelled clips"):
        check_anchors(8, Recipe(position_loss_weight=1.0, num_anchors=9))
    check_anchors(8, Recipe(position_loss_weight=0.0, num_anchors=9))  # no position targets, no anchors
    root = good_corpus(tmp_path / "corpus")  # 8 unlabelled clips
    result = run_cli("main", "--dataset", str(root), "--recipe", "balanced", "--num_anchors", "50",
                     "--lbl_trai_size", "2", "--lbl_test_size", "4", "--num_simulations", "1",
                     "--parallel_simulations", "1", "--results_path", str(tmp_path / "results"), timeout=300)
    assert result.returncode == 2
    assert_one_line_error(result, "num_anchors=50", "8 unlabelled clips", "Fix:")
    runs = MlflowClient().search_runs([sqlite_tracking["experiment_id"]])
    steps = sorted(run.data.tags.get("spatial_ae.step", "") for run in runs)
    assert steps == ["featurize", "main"], steps  # no pretrain or simulation started
    assert {run.info.status for run in runs if run.data.tags.get("spatial_ae.step") == "main"} == {"FAILED"}


def test_failed_simulations_end_the_command_with_one_error_line(sqlite_tracking, monkeypatch, capsys):
    from spatial_ae import cli
    from spatial_ae.errors import SimulationsFailed

    def failing(**params):
        raise SimulationsFailed("1 of 2 simulations failed: simulation 2: ValueError: boom")

    monkeypatch.setattr(cli, "step_function", lambda step: failing)
    monkeypatch.setattr(cli, "configure_threads", lambda processes: None)
    assert cli.main("main", ["--num_simulations", "2", "--parallel_simulations", "1"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: 1 of 2 simulations failed: simulation 2: ValueError: boom"]


# 4. per-word metric names

@pytest.mark.parametrize("words, named", [
    (("café", "caf_", "yes"), ["'café' and 'caf_' -> 'caf_'", "Fix: rename the folders"]),
    (("c++", "c__"), ["'c++' and 'c__' -> 'c__'", "Fix: rename the folders"]),
    (("a" * 230, "b"), ["longer than 217 characters", "250", "Fix: rename the folders"]),
])
def test_words_whose_metric_names_collide_or_are_too_long(words, named):
    from spatial_ae.errors import UserError
    from spatial_ae.method.metrics import check_word_metric_names

    with pytest.raises(UserError) as error:
        check_word_metric_names(words)
    for word in named:
        assert word in str(error.value), str(error.value)
    check_word_metric_names(("no", "yes", "a" * 217, "caf_", "cafe"))


def test_metric_prefixes_cover_every_model():
    from spatial_ae.names import KWS, MODELS
    from spatial_ae.method.metrics import MODEL_PREFIXES

    assert {*MODELS, KWS} <= set(MODEL_PREFIXES)


def test_colliding_word_folders_are_refused_at_featurize(sqlite_tracking, tmp_path):
    import shutil

    from mlflow.tracking import MlflowClient

    root = good_corpus(tmp_path / "corpus")
    for word in ("café", "caf_"):
        shutil.copytree(root / "no", root / word)
    result = run_cli("featurize", "--dataset", str(root), "--lbl_trai_size", "2", timeout=300)
    assert result.returncode == 2
    assert_one_line_error(result, "'caf_' and 'café'", "Fix: rename the folders")
    assert not MlflowClient().search_runs([sqlite_tracking["experiment_id"]])  # stopped before any run
