"""Classification metrics of the paper, the right way round.

precision of word w = share of the clips predicted as w that are w; recall of w = share of the clips of w
predicted as w (the original code passed scikit-learn's arguments swapped, exchanging the two).
WER = 1 - accuracy, a fraction for every model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from spatial_ae.names import KWS, MODELS


@dataclass
class ClassificationReport:
    words: tuple[str, ...]
    accuracy: float
    precision: np.ndarray  # per word
    recall: np.ndarray  # per word
    support: np.ndarray  # test clips per word
    weighted_precision: float
    weighted_recall: float
    confusion: np.ndarray  # rows: true word, columns: predicted word
    validation_accuracy: float | None = None  # on the clips that early-stopped the classifier, not the test clips

    @property
    def wer(self) -> float:
        return 1.0 - self.accuracy

    def summary_metrics(self, prefix: str) -> dict[str, float]:
        """Flat MLflow metrics: the headline accuracy, WER, weighted precision and recall, and the per-word
        precision and recall under PER_WORD (a section of their own in the UI's charts, after the headline)."""
        values = {f"{prefix}_accuracy": self.accuracy, f"{prefix}_wer": self.wer,
                  f"{prefix}_weighted_precision": self.weighted_precision,
                  f"{prefix}_weighted_recall": self.weighted_recall}
        for word, precision, recall in zip(self.words, self.precision, self.recall):
            values[f"{PER_WORD}{prefix}_precision_{metric_safe(word)}"] = float(precision)
            values[f"{PER_WORD}{prefix}_recall_{metric_safe(word)}"] = float(recall)
        return values

    def per_class_table(self, model: str) -> pd.DataFrame:
        return pd.DataFrame({"model": model, "word": self.words, "precision": self.precision,
                             "recall": self.recall, "support": self.support})

    def confusion_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.confusion, index=pd.Index(self.words, name="true"),
                            columns=pd.Index(self.words, name="predicted"))


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, words: tuple[str, ...]) -> ClassificationReport:
    """Metrics of predicted word indices against true ones; words absent from both score 0."""
    labels = np.arange(len(words))
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    weighted_precision, weighted_recall, _, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    return ClassificationReport(words=tuple(words), accuracy=float(np.mean(y_true == y_pred)),
                                precision=precision, recall=recall, support=support,
                                weighted_precision=float(weighted_precision), weighted_recall=float(weighted_recall),
                                confusion=confusion_matrix(y_true, y_pred, labels=labels))


def metric_safe(name: str) -> str:
    """A word as an MLflow metric name part."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name)


PER_WORD = "per_word/"  # the prefix of the per-word metrics
MAX_METRIC_NAME = 250  # MLflow's limit on a metric name
MODEL_PREFIXES = (*MODELS, KWS)  # the prefixes of `summary_metrics`
LONGEST_PER_WORD = "_precision_"


def check_word_metric_names(words, source: str = "the corpus") -> None:
    """Refuse, before any training, words whose per-word metric names (`per_word/<model>_precision_<word>`) would
    collide (`café` and `caf_` are both `caf_`) or exceed MLflow's 250 characters."""
    from spatial_ae.errors import UserError

    by_name: dict[str, list[str]] = {}
    for word in words:
        by_name.setdefault(metric_safe(word), []).append(word)
    clashes = [names for names in by_name.values() if len(names) > 1]
    if clashes:
        shown = "; ".join(" and ".join(repr(w) for w in names) + f" -> {metric_safe(names[0])!r}" for names in clashes)
        raise UserError(f"word folders of {source} map to the same metric name ({shown}): only one word's precision "
                        f"and recall would be kept. Fix: rename the folders so that they differ in letters, digits, "
                        f"'_', '-', '.', ' ' or '/'.")
    room = MAX_METRIC_NAME - len(PER_WORD) - max(map(len, MODEL_PREFIXES)) - len(LONGEST_PER_WORD)
    long = [word for word in words if len(metric_safe(word)) > room]
    if long:
        raise UserError(f"word folder name(s) of {source} longer than {room} characters ({len(long[0])}: "
                        f"{long[0][:40]!r}...): metric names such as {PER_WORD}embedding_dnn_precision_<word> would exceed "
                        f"MLflow's {MAX_METRIC_NAME}. Fix: rename the folders to at most {room} characters.")
