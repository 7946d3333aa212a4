"""Precision and recall the right way round (the original code swapped them), WER as a fraction."""
import numpy as np
from sklearn.metrics import precision_score, recall_score

from spatial_ae.method.metrics import classification_report


def test_orientation_on_a_hand_made_case():
    words = ("yes", "no", "up")
    # 4 clips of "yes": 3 predicted yes, 1 predicted no; 2 clips of "no": both predicted yes; "up" never occurs.
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 0, 0])
    report = classification_report(y_true, y_pred, words)
    # precision of yes = share of clips predicted yes that are yes = 3/5; recall of yes = 3/4
    assert np.allclose(report.precision, [3 / 5, 0.0, 0.0])
    assert np.allclose(report.recall, [3 / 4, 0.0, 0.0])
    assert np.allclose(report.precision, precision_score(y_true, y_pred, labels=[0, 1, 2], average=None, zero_division=0))
    assert np.allclose(report.recall, recall_score(y_true, y_pred, labels=[0, 1, 2], average=None, zero_division=0))
    # the original's swapped call gives the other numbers: this is what we no longer report
    swapped = precision_score(y_pred, y_true, labels=[0, 1, 2], average=None, zero_division=0)
    assert np.allclose(swapped, report.recall) and not np.allclose(swapped, report.precision)
    assert report.accuracy == 3 / 6 and report.wer == 1 - 3 / 6
    assert np.isclose(report.weighted_precision, (4 * 3 / 5 + 2 * 0) / 6)
    assert np.isclose(report.weighted_recall, (4 * 3 / 4 + 2 * 0) / 6)
    assert report.confusion.tolist() == [[3, 1, 0], [2, 0, 0], [0, 0, 0]]
    metrics = report.summary_metrics("m")
    assert metrics["per_word/m_precision_yes"] == 3 / 5 and metrics["per_word/m_recall_yes"] == 3 / 4
    assert metrics["m_wer"] == 0.5 and not any("_yes" in name for name in metrics if "/" not in name)  # one prefix
    table = report.per_class_table("m")
    assert table["support"].tolist() == [4, 2, 0]
