"""Figures logged as PNG artifacts (matplotlib, no screen needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_figure(confusion: np.ndarray, words, title: str):
    """Confusion matrix, rows normalised to the share of each true word."""
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.32 * len(words) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(words)), words, rotation=90, fontsize=7)
    ax.set_yticks(range(len(words)), words, fontsize=7)
    ax.set_xlabel("predicted word")
    ax.set_ylabel("true word")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true word's clips")
    fig.tight_layout()
    return fig
