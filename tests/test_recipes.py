"""Recipes of the position constraint (issue 9), the MFCC-DNN baseline, per-word sampling and the sweep."""
import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans

from spatial_ae.data.corpus import TRAIN, UNLABELLED
from spatial_ae.mlflow_io.registry import load_keras_encoder
from spatial_ae.steps.evaluate import labelled_sample
from spatial_ae.data.features import MEL_DIM
from spatial_ae.params import arguments, parse_step_params, step_arguments
from spatial_ae.method.positions import (cosine_positions, dtw_distances, exemplar_clips, mean_anchor, mfcc_frames,
                                         position_loss_scale, position_targets)
from spatial_ae.method.recipes import RECIPES, resolve_recipe
from spatial_ae.settings import PretrainSettings, Recipe
from spatial_ae.runs.workflow import main
from tests.conftest import SMALL_CLIPS_PER_WORD

TINY = dict(dataset="synthetic", unlabeled_set_size=240, lbl_trai_size=30, lbl_test_size=60,
            synthetic_clips_per_word=SMALL_CLIPS_PER_WORD, ae_epochs=3, patience=2, dnn_epochs=3, cnn_epochs=2)


def test_presets_resolve_as_documented_and_explicit_options_override():
    assert resolve_recipe("paper").params() == {
        "recipe": "paper", "standardize_inputs": False, "standardize_positions": False,
        "position_features": "power_mel", "num_anchors": 1, "position_loss_weight": 1.0, "balance_losses": False,
        "embedding_dim": 75, "augment_shifts": 0, "extra_unlabelled": "none"}
    assert resolve_recipe("balanced") == Recipe(name="balanced", **RECIPES["balanced"])
    assert RECIPES["balanced"]["standardize_inputs"] and RECIPES["balanced"]["num_anchors"] > 1
    params = parse_step_params("main", {"recipe": "balanced", "num_anchors": "3", "standardize_positions": "false"})
    assert params["position_loss_weight"] is None  # not given: the recipe decides
    resolved = step_arguments("main", params)["settings"].pretrain.recipe  # resolved once, from the parameters
    assert resolved.num_anchors == 3 and resolved.standardize_positions is False
    assert resolved.position_features == "log_mel" and resolved.balance_losses is True
    assert resolve_recipe("paper", position_loss_weight=0.0).position_loss_weight == 0.0


def test_anchor_is_the_mean_and_positions_equal_cdist():
    rng = np.random.default_rng(1)
    mel = rng.gamma(1.0, 1.0, size=(50, MEL_DIM)).astype(np.float32)
    centre = mean_anchor(mel)
    assert centre.shape == (MEL_DIM,) and centre.dtype == np.float64
    np.testing.assert_allclose(centre, mel.astype(np.float64).mean(axis=0), rtol=1e-12)
    one = cosine_positions(mel, centre)
    assert one.shape == (50,)
    np.testing.assert_allclose(one, cdist(mel, centre[None, :], "cosine")[:, 0], rtol=1e-10, atol=1e-13)
    anchors = mel[:3].astype(np.float64) * 2
    several = cosine_positions(mel, anchors)
    assert several.shape == (50, 3)
    np.testing.assert_allclose(several, cdist(mel, anchors, "cosine"), rtol=1e-10, atol=1e-13)
    assert several[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_k_anchors_give_cosine_distances_to_kmeans_centres():
    mel = np.random.default_rng(0).gamma(1.0, size=(60, 16)).astype(np.float32)
    targets = position_targets(mel, None, "power_mel", 3, standardize=False, seed=4)
    centres = KMeans(n_clusters=3, n_init=3, random_state=4).fit(mel).cluster_centers_
    assert targets.shape == (60, 3)
    np.testing.assert_allclose(targets, cdist(mel, centres, "cosine"), rtol=1e-5, atol=1e-6)
    paper = position_targets(mel, None, "power_mel", 1, standardize=False, seed=4)
    np.testing.assert_allclose(paper[:, 0], cosine_positions(mel, mean_anchor(mel)), rtol=1e-6)
    standardized = position_targets(mel, None, "log_mel", 3, standardize=True, seed=4)
    np.testing.assert_allclose(standardized.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(standardized.std(axis=0), 1, atol=1e-4)
    reconstruction = np.random.default_rng(1).normal(0, 10, size=(60, 8))
    assert position_loss_scale(reconstruction, paper, balance=True) > 100
    assert position_loss_scale(reconstruction, paper, balance=False) == 1.0


def reference_dtw(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook dynamic time warping, one cell at a time: the reference for the vectorised one."""
    table = np.full((len(a) + 1, len(b) + 1), np.inf)
    table[0, 0] = 0.0
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            step = np.linalg.norm(a[i - 1] - b[j - 1])
            table[i, j] = step + min(table[i - 1, j], table[i, j - 1], table[i - 1, j - 1])
    return table[-1, -1] / (len(a) + len(b))


def test_dtw_distances_match_the_textbook_recursion_and_ignore_tempo():
    rng = np.random.default_rng(3)
    sequences, exemplars = rng.normal(size=(5, 7, 3)), rng.normal(size=(4, 6, 3))
    expected = [[reference_dtw(s, e) for e in exemplars] for s in sequences]
    np.testing.assert_allclose(dtw_distances(sequences, exemplars, block=2), expected, rtol=1e-10)

    word = rng.normal(size=(8, 3))
    slow = np.repeat(word, 2, axis=0)  # the same word said twice as slowly: every frame repeated
    other = rng.normal(size=(16, 3))
    slow_cost, other_cost = dtw_distances(np.stack([slow, other]), word[None])[:, 0]
    assert slow_cost == pytest.approx(0.0, abs=1e-6)
    assert other_cost > 0.5


def test_dtw_positions_are_distances_to_distinct_unlabelled_exemplars():
    mfcc = np.random.default_rng(5).normal(0, 20, size=(40, 640)).astype(np.float32)
    frames = mfcc_frames(mfcc)
    assert frames.shape == (40, 32, 19)
    np.testing.assert_allclose(frames[3, 4], (mfcc.reshape(40, 20, 32)[3, 1:, 4] - mfcc.reshape(40, 20, 32)[:, 1:].mean(
        axis=(0, 2))) / mfcc.reshape(40, 20, 32)[:, 1:].std(axis=(0, 2)), rtol=1e-4, atol=1e-4)
    exemplars = exemplar_clips(frames, 6, seed=1)
    assert len(set(exemplars.tolist())) == 6
    targets = position_targets(None, mfcc, "mfcc_dtw", 6, standardize=False, seed=1)
    assert targets.shape == (40, 6)
    np.testing.assert_allclose(targets[exemplars, range(6)], 0.0, atol=1e-6)  # each exemplar is its own zero
    np.testing.assert_allclose(targets, dtw_distances(frames, frames[exemplars]), rtol=1e-5)
    assert resolve_recipe("dtw").position_features == "mfcc_dtw"


def test_plain_autoencoders_of_recipes_that_differ_only_in_positions_are_one_encoder():
    def identity(recipe: str, **options) -> dict:
        return PretrainSettings(3, 0, 2, "Adamax", 32, resolve_recipe(recipe, **options)).identity()

    plain = [identity(r, position_loss_weight=0.0) for r in ("balanced", "dtw")]
    assert plain[0] == plain[1] and "position_features" not in plain[0]
    assert identity("paper", position_loss_weight=0.0) != plain[0]  # raw inputs
    spatial = [identity(r) for r in ("balanced", "dtw")]
    assert spatial[0] != spatial[1] and spatial[0]["position_features"] == "log_mel"


def test_balanced_recipe_carries_the_normalisation_and_mfcc_dnn_is_logged(sqlite_tracking, small_synthetic_corpus,
                                                                         tmp_path):
    parent_id = main(**arguments("main", TINY | {"recipe": "balanced", "num_anchors": "4", "num_simulations": 1,
                                                 "results_path": str(tmp_path / "results")}))
    client = MlflowClient()
    assert client.get_run(parent_id).data.params["standardize_inputs"] == "True"
    simulation = next(r for r in client.search_runs([sqlite_tracking["experiment_id"]],
                                                    f"tags.mlflow.parentRunId = '{parent_id}'")
                      if r.data.tags["spatial_ae.step"] == "simulation")
    logged = simulation.data.params
    assert (logged["recipe"], logged["num_anchors"], logged["position_features"]) == ("balanced", "4", "log_mel")
    assert float(logged["position_loss_scale"]) > 0
    for model in ("embedding_dnn", "mfcc_cnn", "mfcc_dnn"):
        assert 0 <= simulation.data.metrics[f"{model}_accuracy"] <= 1
    assert "mfcc_dnn_weighted_precision" in simulation.data.metrics
    per_class = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=simulation.info.run_id, artifact_path="evaluation/per_class_metrics.csv"))
    assert set(per_class["model"]) == {"embedding_dnn", "mfcc_cnn", "mfcc_dnn"}

    from spatial_ae.steps.featurize import load_feature_set

    feature_set = load_feature_set(client.get_run(parent_id).data.tags["featurize_run_id"])
    encoder = load_keras_encoder(simulation.data.tags["encoder_uri"])
    assert isinstance(encoder.get_layer("input_standardization"), keras.layers.Normalization)
    unlabelled = feature_set.mfcc[feature_set.indices(UNLABELLED)]
    raw = feature_set.mfcc[:8]
    by_coefficient = unlabelled.reshape(len(unlabelled), 20, 32)
    mean = np.repeat(by_coefficient.mean(axis=(0, 2)), 32)
    std = np.repeat(by_coefficient.std(axis=(0, 2)), 32)
    x = (raw - mean) / std
    for layer in encoder.layers:
        if not isinstance(layer, (keras.layers.InputLayer, keras.layers.Normalization)):
            x = layer(x, training=False)
    np.testing.assert_allclose(encoder.predict(raw, verbose=0), np.asarray(x), rtol=1e-3, atol=1e-4)


def test_labelled_sample_per_word():
    class Features:
        words = ("a", "b", "c")
        labels = np.repeat([0, 1, 2], 10)
        splits = np.array([TRAIN] * 30)

        def indices(self, split):
            return np.flatnonzero(self.splits == split)

    train, stop = labelled_sample(Features(), lbl_trai_size=100, seed=0, labelled_per_word=3)
    assert np.bincount(Features.labels[train]).tolist() == [3, 3, 3]
    assert np.bincount(Features.labels[stop]).tolist() == [3, 3, 3]
    assert not set(train) & set(stop)


@pytest.mark.parametrize("parallel_simulations", [1, 2])
def test_tiny_sweep_writes_the_table_and_the_figure(sqlite_tracking, small_synthetic_corpus, tmp_path,
                                                    parallel_simulations):
    """The sweep's run tree (sweep > cells > simulations), its table and figure, here (1 simulation) and in 2
    worker processes (2); each (recipe, weight, simulation) pretrains once, the plain AE (weight 0) once for both
    recipes, and each (size, simulation) trains the baselines once."""
    from spatial_ae.runs.sweep import CSV_NAME, FIGURE_NAME, sweep

    results = tmp_path / "sweep"
    params = arguments("sweep", TINY | {"recipes": "balanced,dtw", "position_loss_weights": "0,1",
                                                "labelled_per_word": "1,2", "num_simulations": parallel_simulations,
                                                "parallel_simulations": parallel_simulations,
                                                "results_path": str(results)})
    parent_id = sweep(**params)
    table = pd.read_csv(results / "latest" / CSV_NAME)
    assert list(table.columns) == ["recipe", "weight", "labelled_per_word", "simulation", "model", "accuracy"]
    seeds = [str(seed) for seed in range(parallel_simulations)]
    assert len(table) == 2 * 2 * 2 * len(seeds) * 3 and set(table["weight"]) == {0.0, 1.0}
    assert table["accuracy"].between(0, 1).all()
    assert (results / "latest" / FIGURE_NAME).stat().st_size > 0
    client = MlflowClient()
    logged = {a.path for a in client.list_artifacts(parent_id)}
    assert {CSV_NAME, FIGURE_NAME} <= logged
    assert client.get_run(parent_id).info.status == "FINISHED"

    experiment = [sqlite_tracking["experiment_id"]]
    cells = client.search_runs(experiment, f"tags.mlflow.parentRunId = '{parent_id}' and tags.`spatial_ae.step` = 'sweep_cell'")
    assert sorted(c.info.run_name for c in cells) == [f"{recipe}-w{weight}-lpw{size}" for recipe in ("balanced", "dtw")
                                                      for weight in (0, 1) for size in (1, 2)]
    simulations = []
    for cell in cells:
        assert cell.info.status == "FINISHED"
        runs = client.search_runs(experiment, f"tags.mlflow.parentRunId = '{cell.info.run_id}'")
        assert sorted(r.data.params["seed"] for r in runs) == seeds
        assert all(r.info.status == "FINISHED" for r in runs)
        rows = table[(table["recipe"] == cell.data.params["recipe"])
                     & (table["weight"] == float(cell.data.params["position_loss_weight"]))
                     & (table["labelled_per_word"] == int(cell.data.params["labelled_per_word"]))]
        for model, group in rows.groupby("model"):
            assert np.isclose(cell.data.metrics[f"mean_{model}_accuracy"], group["accuracy"].mean())
        simulations += runs
    def coordinates(run):
        return run.data.params["recipe"], run.data.params["position_loss_weight"], run.data.params["seed"]

    encoders = {coordinates(r): r.data.tags["encoder_uri"] for r in simulations}
    assert all(r.data.tags["encoder_uri"] == encoders[coordinates(r)] for r in simulations)  # evaluated at both sizes
    assert len(set(encoders.values())) == 3 * len(seeds)  # balanced and dtw, and one plain AE for both, per seed
    assert all(encoders[("balanced", "0.0", seed)] == encoders[("dtw", "0.0", seed)] for seed in seeds)
    assert {r.data.params["position_features"] for r in simulations if r.data.params["recipe"] == "dtw"} == {"mfcc_dtw"}
    trained_baselines = [r for r in simulations if "baselines_reused" not in r.data.tags]
    assert sorted((r.data.params["labelled_per_word"], r.data.params["seed"]) for r in trained_baselines) == [
        (size, seed) for size in ("1", "2") for seed in seeds]
    if parallel_simulations == 2:
        first, second = (min((r for r in simulations if r.data.params["seed"] == seed), key=lambda r: r.info.start_time)
                         for seed in ("0", "1"))
        assert second.info.start_time < first.info.end_time and first.info.start_time < second.info.end_time


def _feature_set(unlabelled: int, seed: int = 0):
    """A FeatureSet of `unlabelled` clips whose MFCC and mel values are their frame numbers plus a clip offset."""
    from spatial_ae.data.features import MEL_SHAPE, MFCC_SHAPE
    from spatial_ae.steps.featurize import FeatureSet

    offsets = np.random.default_rng(seed).uniform(0, 1, unlabelled)[:, None, None]
    mfcc = (np.arange(MFCC_SHAPE[1])[None, None, :] + offsets + np.zeros((1, MFCC_SHAPE[0], 1))).reshape(unlabelled, -1)
    mel = (np.arange(MEL_SHAPE[1])[None, None, :] + offsets + np.zeros((1, MEL_SHAPE[0], 1))).reshape(unlabelled, -1)
    return FeatureSet(words=("a",), mfcc=mfcc.astype(np.float32), labels=np.zeros(unlabelled, int),
                      splits=np.full(unlabelled, UNLABELLED), paths=np.array([f"a/{i}.wav" for i in range(unlabelled)]),
                      unlabelled_mel=mel.astype(np.float32))


def test_shifted_frames_move_each_clip_in_time_and_repeat_the_edge_frame():
    from spatial_ae.steps.pretrain import shifted_frames

    features = np.tile(np.arange(8, dtype=np.float32), (2, 3, 1)).reshape(2, -1)  # 2 clips, 3 bands, 8 frames
    moved = shifted_frames(features, (3, 8), np.array([2, -3])).reshape(2, 3, 8)
    assert moved[0, 1].tolist() == [0, 0, 0, 1, 2, 3, 4, 5]
    assert moved[1, 2].tolist() == [3, 4, 5, 6, 7, 7, 7, 7]


def test_shifted_recipe_adds_copies_shifted_alike_in_mfcc_and_mel():
    from spatial_ae.steps.pretrain import added_clips

    feature_set = _feature_set(10)
    rows = np.array([4, 1, 7, 0])
    mfcc, mel = added_clips(feature_set, rows, resolve_recipe("shifted"), seed=3)
    assert mfcc.shape == (4, 640) and mel.shape == (4, 4096)  # one shifted copy of each training clip
    assert added_clips(feature_set, rows, resolve_recipe("paper"), seed=3)[0].shape == (0, 640)
    first_frames = mfcc.reshape(4, 20, 32)[:, 0, :]
    np.testing.assert_allclose(first_frames, mel.reshape(4, 128, 32)[:, 0, :])  # one shift per clip, in both
    shifts = first_frames[:, 16] - feature_set.mfcc[rows].reshape(4, 20, 32)[:, 0, 16]
    assert np.all(np.isin(np.round(shifts), [-4, -3, -2, -1, 1, 2, 3, 4])), shifts


def test_voices_recipe_adds_as_many_synthetic_clips():
    from spatial_ae.steps.pretrain import added_clips

    feature_set = _feature_set(6)
    mfcc, mel = added_clips(feature_set, np.arange(5), resolve_recipe("voices"), seed=0)
    assert mfcc.shape == (5, 640) and mel.shape == (5, 4096)
    extra = mfcc.reshape(5, 20, 32)
    assert np.isfinite(extra).all() and extra[:, 0].std() > 1.0  # real speech MFCC, not the frame-number clips
    assert not np.isin(extra[:, 0, 0], feature_set.mfcc.reshape(6, 20, 32)[:, 0, 0]).any()
