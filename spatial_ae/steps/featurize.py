"""The featurize step: pick the paper's clips from a corpus, compute their MFCC and the unlabelled clips' mel, log them.

Its output, the artifact folder `features/` of the run, is what later steps read (`load_feature_set`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from spatial_ae.data import features
from spatial_ae.mlflow_io import tracking
from spatial_ae.data.corpus import SPLITS, TEST, TRAIN, UNLABELLED, Clip, Corpus
from spatial_ae.data.sources import open_corpus
from spatial_ae.errors import UserError
from spatial_ae.method.metrics import check_word_metric_names
from spatial_ae.names import FEATURES_DIR, NOTE_TAG, REUSED_RUN_TAG
from spatial_ae.settings import FeaturizeSettings

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"


@dataclass
class FeatureSet:
    """Features of the selected clips, in the corpus' word order.

    mfcc: (n, 640) float32, flattened 20 x 32 MFCC; labels: (n,) index into `words`; splits: (n,) split names;
    paths: (n,) clip paths relative to the corpus root; unlabelled_mel: (u, 4096) power mel of the unlabelled
    clips, in their order (the pretrain step computes the position targets from it, per recipe).
    """

    words: tuple[str, ...]
    mfcc: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    paths: np.ndarray
    unlabelled_mel: np.ndarray

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("mfcc", "labels", "unlabelled_mel"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        pd.DataFrame({"path": self.paths, "word": np.asarray(self.words)[self.labels], "split": self.splits,
                      "label": self.labels}).to_csv(folder / "clips.csv", index=False)
        (folder / "words.json").write_text(json.dumps({"format": FORMAT_VERSION, "words": list(self.words)}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "FeatureSet":
        clips = pd.read_csv(folder / "clips.csv", keep_default_na=False)
        arrays = {name: np.load(folder / f"{name}.npy") for name in ("mfcc", "labels", "unlabelled_mel")}
        words = tuple(json.loads((folder / "words.json").read_text())["words"])
        return cls(words=words, splits=clips["split"].to_numpy(str), paths=clips["path"].to_numpy(str), **arrays)


def load_feature_set(featurize_run_id: str) -> FeatureSet:
    """The features logged by a finished featurize run."""
    tracking.get_finished_run(featurize_run_id, "featurize")
    return FeatureSet.load(tracking.download_run_artifacts(featurize_run_id, FEATURES_DIR))


def select_clips(corpus: Corpus, unlabeled_set_size: int, lbl_trai_size: int, lbl_test_size: int,
                 seed: int) -> tuple[list[Clip], list[str]]:
    """The clips the experiment uses: a seeded sample of the unlabelled and test splits, and the whole
    labelled pool (validation list), from which each simulation draws its own training sample."""
    rng = np.random.default_rng(seed)
    wanted = {UNLABELLED: unlabeled_set_size, TRAIN: None, TEST: lbl_test_size}
    selected, warnings = [], []
    for split in SPLITS:
        pool = corpus.split(split)
        size = wanted[split]
        if split == TRAIN and len(pool) < 2 * lbl_trai_size:
            warnings.append(f"the labelled pool ({LIST_NAME[split]}) has {len(pool)} clips, fewer than the "
                            f"{2 * lbl_trai_size} (2 x lbl_trai_size) the paper draws; each simulation uses what there is")
        if size is not None and len(pool) < size:
            warnings.append(f"the {split} split has {len(pool)} clips, fewer than the {size} asked for; using all of them")
        if size is not None and len(pool) > size:
            pool = [pool[i] for i in np.sort(rng.choice(len(pool), size, replace=False))]
        if not pool:
            raise UserError(f"the {split} split of corpus {corpus.root} is empty. Fix: check {LIST_NAME[split]} "
                            f"or pass a corpus with clips in every split.")
        selected.extend(pool)
    return selected, warnings


LIST_NAME = {UNLABELLED: "clips in neither list", TRAIN: "validation_list.txt", TEST: "testing_list.txt"}


def reuse_key(params: dict, corpus: Corpus) -> str:
    text = json.dumps({"params": params, "corpus": corpus.fingerprint(), "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def featurize(settings: FeaturizeSettings, cluster=None) -> str:
    """Run (or reuse) the featurize step; returns the id of the featurize run holding the features.
    `cluster` (runs.spark.Cluster): read and featurize the clips there (same features; not part of the reuse key)."""
    tracking.check_tracking_server()
    params = settings.params()
    dataset, seed = settings.dataset, settings.seed
    corpus = open_corpus(dataset, synthetic_clips_per_word=settings.synthetic_clips_per_word, seed=seed,
                         include_unknown_silence=settings.include_unknown_silence)
    check_word_metric_names(corpus.words, str(corpus.root))  # before any work: metric names are made per word
    key = reuse_key(params, corpus)
    with tracking.claimed(f"featurize-{key}"):  # an identical featurize at once waits, then reuses this one
        previous = tracking.find_finished_run("featurize", key)
        if previous is not None:
            message = (f"featurize: reusing finished run {previous.info.run_id} (same corpus and parameters); "
                       f"nothing recomputed")
            log.info(message)
            print(message, flush=True)
            _note_reuse_in_project_run(params, previous.info.run_id)
            return previous.info.run_id

        clips, selection_warnings = select_clips(corpus, settings.unlabeled_set_size, settings.lbl_trai_size,
                                                 settings.lbl_test_size, seed)
        with tracking.step_run("featurize", params, run_name="featurize", key=key,
                               tags={"dataset": corpus.name, "corpus_fingerprint": corpus.fingerprint()}) as run:
            for message in corpus.warnings + selection_warnings:
                log.warning(message)
            if cluster is not None:
                mlflow.set_tag("spark_master", cluster.master)
            feature_set, skipped = _compute(corpus, clips, cluster)
            _log_feature_set(corpus, feature_set, skipped, corpus.warnings + selection_warnings)
            log.info("featurize: run %s logged %d clips", run.info.run_id, len(feature_set.labels))
            return run.info.run_id


def _compute(corpus: Corpus, clips: list[Clip], cluster=None) -> tuple[FeatureSet, list[tuple[str, str]]]:
    is_unlabelled = np.array([clip.split == UNLABELLED for clip in clips])
    table = features.featurize_files([clip.file for clip in clips], [clip.path for clip in clips],
                                     keep_mel=is_unlabelled,
                                     map_chunks=None if cluster is None else cluster.map_chunks)
    ok, skipped = _drop_non_finite(clips, table, is_unlabelled)
    for _, reason in skipped[:20]:
        log.warning("skipped %s", reason)
    if len(skipped) > 20:
        log.warning("skipped %d more clips (all listed in features/skipped_clips.csv)", len(skipped) - 20)
    kept_mel_ok = ok[is_unlabelled]  # mel rows exist for every unlabelled clip, usable or not
    unlabelled_mel = table.mel[kept_mel_ok]
    if len(unlabelled_mel) == 0:
        raise UserError(f"no unlabelled clip of {corpus.root} could be read ({len(skipped)} skipped, e.g. "
                        f"{skipped[0][1] if skipped else 'none'}); see the skipped clips above")
    word_index = {word: i for i, word in enumerate(corpus.words)}
    kept = [clip for clip, usable in zip(clips, ok) if usable]
    feature_set = FeatureSet(
        words=corpus.words,
        mfcc=table.mfcc[ok],
        labels=np.array([word_index[clip.word] for clip in kept], dtype=np.int32),
        splits=np.array([clip.split for clip in kept]),
        paths=np.array([clip.path for clip in kept]),
        unlabelled_mel=unlabelled_mel.astype(np.float32),
    )
    return feature_set, skipped


def _drop_non_finite(clips: list[Clip], table, is_unlabelled: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Usable rows and the skipped clips: those `featurize_files` could not use (unreadable, or NaN or infinite
    MFCC) and the unlabelled ones whose mel is not finite or has zero energy (digital silence: no position)."""
    ok = table.ok.copy()
    reasons = dict(table.errors)
    mel_ok = np.ones(len(clips), dtype=bool)
    mel_ok[is_unlabelled] = np.isfinite(table.mel).all(axis=1) & (table.mel.sum(axis=1, dtype=np.float64) > 0)
    fix = "Fix: re-export or delete it; it was skipped."
    for index in np.flatnonzero(ok & ~mel_ok):
        ok[index] = False
        reasons[clips[index].path] = (f"clip {clips[index].file}: silent or overflowing (mel energy "
                                      f"{table.mel[is_unlabelled[:index].sum()].sum():g}), its position is undefined. {fix}")
    return ok, [(clip.path, reasons[clip.path]) for clip in clips if clip.path in reasons]


def _log_feature_set(corpus: Corpus, feature_set: FeatureSet, skipped: list[tuple[str, str]], warnings: list[str]) -> None:
    counts = (pd.crosstab(pd.Categorical(np.asarray(feature_set.words)[feature_set.labels], categories=corpus.words),
                          pd.Categorical(feature_set.splits, categories=SPLITS), dropna=False)
              .rename_axis(index="word", columns=None).reset_index())
    counts["corpus_total"] = [sum(1 for c in corpus.clips if c.word == w) for w in counts["word"]]
    mlflow.log_metrics({f"clips_{split}": int((feature_set.splits == split).sum()) for split in SPLITS}
                       | {"clips_skipped": len(skipped), "corpus_clips": len(corpus.clips), "words": len(corpus.words)})
    mlflow.log_table(counts, "counts_per_word.json")
    listing = pd.DataFrame({"path": feature_set.paths, "word": np.asarray(feature_set.words)[feature_set.labels],
                            "split": feature_set.splits})
    mlflow.log_input(mlflow.data.from_pandas(listing, source=corpus.source, targets="word", name=corpus.name),
                     context="featurize")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / FEATURES_DIR
        feature_set.save(folder)
        counts.to_csv(folder / "counts_per_word.csv", index=False)
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(folder / "skipped_clips.csv", index=False)
        (folder / "warnings.txt").write_text("".join(f"{w}\n" for w in warnings))
        mlflow.log_artifacts(str(folder), FEATURES_DIR)
        tracking.log_folder_digest(folder, FEATURES_DIR)  # checked by every cached copy


def _note_reuse_in_project_run(params: dict, reused_run_id: str) -> None:
    """When `mlflow run` started a run for this step, record in it which run was reused."""
    if os.environ.get("MLFLOW_RUN_ID") and mlflow.active_run() is None:
        with mlflow.start_run() as run:
            tracking.log_params(run, params)  # keeps what `mlflow run` logged ('false' for False)
            mlflow.set_tags({REUSED_RUN_TAG: reused_run_id,
                             NOTE_TAG: f"Reused featurize run {reused_run_id}: same corpus and parameters."})
