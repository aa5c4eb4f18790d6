"""PNG plots (matplotlib, Agg backend): accuracy (and attack success rate) over rounds; grid heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(result: Any, path: Path) -> None:
    plt = _plt()
    rounds = [h["round"] for h in result.history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(rounds, [h["accuracy"] for h in result.history], label="test accuracy")
    if any("attack_success_rate" in h for h in result.history):
        ax.plot(rounds, [h.get("attack_success_rate", np.nan) for h in result.history], "--",
                label="attack success rate")
    c = result.config
    import textwrap

    title = f"{c.name}\n{c.attack.name} vs {c.federation.aggregator} (groups of {c.federation.group_size})"
    ax.set_title("\n".join(textwrap.fill(line, 90) for line in title.split("\n")), fontsize=7)
    ax.set_xlabel("round")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmap(values: np.ndarray, rows: list[str], cols: list[str], title: str, path: Path,
                 labels: list[list[str]] | None = None) -> None:
    """Attack × defence heatmap; ``labels`` (default: the values in %) are the cells' texts – the grid passes
    the table's, marks (†‡§) included."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.0 + 0.45 * len(rows)))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            text = labels[i][j] if labels is not None else ("–" if np.isnan(v) else f"{100 * v:.1f}")
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
