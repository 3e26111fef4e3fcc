"""The run's Pareto plot: every measured subnet, the exported front, and the budgets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.context import Context
from nas.io import read_jsonl


def pareto_plot(ctx: Context, front: Sequence[dict[str, Any]], path: Path) -> None:
    """Accuracy against each minimised objective, one panel per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = read_jsonl(ctx.path("measure", "table.jsonl")) + read_jsonl(ctx.path("search", "validated.jsonl"))
    costs = [o.metric for o in ctx.exp.objectives if o.metric != "accuracy"] or ["latency_ms"]
    fig, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], costs):
        ax.scatter([r[metric] for r in table], [r["accuracy"] for r in table], s=10, c="0.7",
                   label="measured subnets (validation)")
        ax.scatter([r[metric] for r in front], [r["accuracy"] for r in front], s=30, c="C3",
                   label="exported front (validation)")
        ax.scatter([r[metric] for r in front], [r["test_accuracy"] for r in front], s=18, marker="x", c="C0",
                   label="exported front (test)")
        for b in ctx.exp.budgets:
            if b.metric == metric and b.max is not None:
                ax.axvline(b.max, ls="--", c="k", lw=1, label=f"budget {b}")
        ax.set_xlabel(metric)
        ax.set_ylabel("accuracy")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{ctx.exp.name}: accuracy vs cost ({ctx.exp.measure.device}, batch {ctx.exp.measure.batch_size})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
