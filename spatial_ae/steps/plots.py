"""Figures logged as PNG artifacts (matplotlib, no screen needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spatial_ae.names import DIFFERENCE_TITLE  # noqa: E402


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


def save_png(figure, path) -> None:
    """Save a figure as PNG (whatever the file name ends with) and close it."""
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)


def pca_figure(vectors: np.ndarray, words, title: str):
    """Per-word vectors projected by PCA to 2-D, each point annotated with its word."""
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, dtype=float)
    components = min(2, *vectors.shape)
    pca = PCA(n_components=components).fit(vectors)
    points = np.zeros((len(vectors), 2))
    points[:, :components] = pca.transform(vectors)
    shares = list(pca.explained_variance_ratio_) + [0.0] * (2 - components)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.scatter(points[:, 0], points[:, 1], s=25, color="tab:blue")
    for word, (x, y) in zip(words, points):
        ax.annotate(word, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"principal component 1 ({shares[0]:.0%} of the variance)")
    ax.set_ylabel(f"principal component 2 ({shares[1]:.0%} of the variance)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def per_word_precision_recall_figure(per_class, words, model_titles: dict[str, str]):
    """Grouped bars per word: each model's precision (top) and recall (bottom), mean over simulations, error bar = std.

    per_class: a table with columns simulation, model, word, precision, recall.
    """
    words = list(words)
    stats = per_class.groupby(["model", "word"])[["precision", "recall"]].agg(["mean", "std"])
    simulations = per_class["simulation"].nunique()
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.45 * len(words) + 2), 8), sharex=True)
    width = 0.8 / len(model_titles)
    positions = np.arange(len(words))
    for ax, measure in zip(axes, ("precision", "recall")):
        for k, (model, title) in enumerate(model_titles.items()):
            rows = stats.loc[model].reindex(words) if model in stats.index.get_level_values(0) else None
            if rows is None:
                continue
            ax.bar(positions + (k - (len(model_titles) - 1) / 2) * width, rows[(measure, "mean")], width,
                   yerr=rows[(measure, "std")].fillna(0), capsize=2, label=title)
        ax.set_ylabel(f"{measure} (mean over simulations)")
        ax.set_ylim(0, 1.1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(f"Per-word precision and recall, mean ± std over {simulations} simulation(s)")
    axes[1].set_xticks(positions, words, rotation=90, fontsize=8)
    axes[1].set_xlabel("word")
    _legend_above(fig, axes[0])
    return fig


def _legend_above(fig, ax, columns: int = 3) -> None:
    """One legend for the figure, above the axes (a legend inside them covered bars or curves)."""
    handles, labels = ax.get_legend_handles_labels()
    rows = -(-len(labels) // columns)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 * rows / fig.get_figheight()))
    fig.legend(handles, labels, loc="upper center", ncol=columns, fontsize=8, frameon=False)


def difference_vs_counts_figure(words, precision_difference, recall_difference, counts, title: str):
    """Per word: precision and recall differences between the models (bars) and the word's clip count,
    divided by the largest count (line, right axis)."""
    positions = np.arange(len(words))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(words) + 2), 5.5))
    ax.bar(positions - 0.2, precision_difference, 0.4, label="precision difference", color="tab:blue")
    ax.bar(positions + 0.2, recall_difference, 0.4, label="recall difference", color="tab:orange")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"difference ({DIFFERENCE_TITLE})")
    ax.set_xticks(positions, words, rotation=90, fontsize=8)
    ax.set_xlabel("word (sorted by clip count)")
    counts = np.asarray(counts, dtype=float)
    scaled = counts / np.nanmax(counts) if np.nanmax(counts) > 0 else counts
    right = ax.twinx()
    right.plot(positions, scaled, color="tab:green", marker="o", label="clip count / largest count")
    right.set_ylim(0, 1.05)
    right.set_ylabel("clips of the word in the corpus, divided by the largest count (0-1)")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def training_curves_figure(histories: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]], panels):
    """Per-epoch curves of every simulation (a colour each), one panel per group of metrics, one legend above.

    histories: simulation index -> metric key -> (epochs, values);
    panels: (title, y label, ((metric key, line style), ...)) per panel.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, ylabel, keys) in zip(np.atleast_1d(axes), panels):
        for k, (simulation, metrics) in enumerate(sorted(histories.items())):
            for key, style in keys:
                if key in metrics:
                    epochs, values = metrics[key]
                    ax.plot(epochs, values, style, color=colors[k % len(colors)], linewidth=1,
                            label=f"simulation {simulation}" if style == "-" else None)
        ax.set_title(title + "\n(solid: training set, dashed: validation)" if len(keys) > 1 else title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _legend_above(fig, np.atleast_1d(axes)[0], columns=5)
    return fig
