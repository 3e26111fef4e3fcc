"""The run's Pareto plot: every measured subnet, the exported front, and the budgets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.io import read_jsonl

if TYPE_CHECKING:  # an annotation only: the report draws with this module without loading the supernets
    from nas.context import Context


def figure(ncols: int, nrows: int = 1, width: float = 5.0, height: float = 3.9) -> tuple[Any, Any]:
    """A fresh matplotlib Figure and its axes grid, without pyplot (no global state, no backend switch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


# Panels of one figure per row at most: the report page is 1200 px wide, so five 500 px panels in a row
# were shown at 48 %, their labels and legends about 5 px high (one panel per cost objective and budget).
PANELS_PER_ROW = 3


def panels(n: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure of `n` panels in rows of at most PANELS_PER_ROW, and its `n` axes (spare cells hidden)."""
    ncols = min(n, PANELS_PER_ROW)
    fig, axes = figure(ncols, -(-n // ncols), width=width, height=height)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def pareto_plot(ctx: Context, front: Sequence[dict[str, Any]], path: Path) -> None:
    """Accuracy against each minimised objective, one panel per objective."""
    from matplotlib.ticker import NullFormatter

    table = read_jsonl(ctx.path("measure", "table.jsonl")) + read_jsonl(ctx.path("search", "validated.jsonl"))
    costs = [o.metric for o in ctx.exp.objectives if o.metric != "accuracy"] or ["latency_ms"]
    # Rows of panels, as the report's plots: six objectives in one row drew 33-inch-wide panels.
    fig, axes = panels(len(costs), width=5.5, height=4.2)
    for ax, metric in zip(axes, costs):
        ax.scatter([r[metric] for r in table], [r["accuracy"] for r in table], s=10, c="0.7",
                   label="measured subnets (validation)")
        ax.scatter([r[metric] for r in front], [r["accuracy"] for r in front], s=30, c="C3",
                   label="exported front (validation)")
        ax.scatter([r[metric] for r in front], [r["test_accuracy"] for r in front], s=18, marker="x", c="C0",
                   label="exported front (test)")
        for b in ctx.exp.budgets:
            limit = b.max if b.max is not None else b.min
            if b.metric == metric:
                ax.axvline(limit, ls="--", c="k", lw=1, label=f"budget {b}")
            elif b.metric == "accuracy":
                ax.axhline(limit, ls="--", c="k", lw=1, label=f"budget {b}")
            elif ax is axes[0] and b.metric not in costs:  # on no panel: named in the legend all the same
                ax.plot([], [], ls="none", label=f"budget {b} (on no axis here)")
        ax.set_xlabel(metric)
        ax.set_ylabel("accuracy")
        values = [r[metric] for r in table if r.get(metric, 0) > 0]
        if values and max(values) > 20 * min(values):  # a log axis only where it spreads the points out
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # else labels at minor ticks overlap on short spans
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    # A budget drawn on another panel only (size_kb <= 4 on the second) had no legend entry anywhere.
    first = set(axes[0].get_legend_handles_labels()[1])
    for ax in axes[1:]:
        own = [(h, label) for h, label in zip(*ax.get_legend_handles_labels()) if label not in first]
        if own:
            ax.legend(*zip(*own), fontsize=7, loc="lower right")
    fig.suptitle(f"{ctx.exp.name}: accuracy vs cost ({ctx.exp.measure.device}, batch {ctx.exp.measure.batch_size})")
    fig.savefig(path, dpi=110)
