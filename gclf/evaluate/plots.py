"""PNG figures for people: the benchmark bars, image galleries with Grad-CAM overlays, the subgroup
bars. The plot data that ``dvc plots`` draws is logged with DVCLive (:mod:`gclf.live`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gclf.io import atomic_write  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    )
    plt.close(fig)


def benchmark_png(path: str | Path, report: dict[str, float], batch_size: int) -> None:
    """Batch-1 latency and batch throughput per runner, as bars labelled with the speedup."""
    names = [k[: -len("_b1_p50_ms")] for k in report if k.endswith("_b1_p50_ms")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    latency = [report[f"{n}_b1_p50_ms"] for n in names]
    throughput = [report[f"{n}_b{batch_size}_img_s"] for n in names]
    left.barh(names, latency, color="tab:orange")
    right.barh(names, throughput, color="tab:blue")
    for i, n in enumerate(names):
        left.text(latency[i], i, f" {latency[i]:.2f} ms ({report[f'{n}_speedup_b1']:.2f}x)", va="center")
        right.text(throughput[i], i, f" {throughput[i]:.0f} ({report[f'{n}_speedup_b{batch_size}']:.2f}x)", va="center")
    left.set(xlabel="batch-1 latency p50 (ms, lower is better)", xlim=(0, max(latency) * 1.6))
    right.set(xlabel=f"batch-{batch_size} throughput (images/s, higher is better)", xlim=(0, max(throughput) * 1.6))
    right.set_yticks(range(len(names)), [""] * len(names))
    fig.suptitle("CPU inference, interleaved runs; speedup vs fp32_eager")
    save_figure(fig, path)


def heat_overlay(heatmap, max_alpha: float = 0.6) -> np.ndarray:
    """RGBA (H, W, 4) for a map in [0, 1]: jet colours, opaque where the map is high and clear
    where it is zero, so the image stays visible where there is no evidence."""
    heatmap = np.clip(np.asarray(heatmap, float), 0, 1)
    rgba = plt.get_cmap("jet")(heatmap)
    rgba[..., 3] = max_alpha * heatmap
    return rgba


def image_grid_png(
    path: str | Path,
    images,
    captions: Sequence[str],
    title: str,
    heatmaps=None,
    columns: int = 4,
) -> None:
    """uint8 images (N, 3, S, S) in a grid, each under its caption; ``heatmaps`` (N maps (S, S) in
    [0, 1], or None for an image to leave bare), when given, are drawn over them with
    :func:`heat_overlay`. An empty set gives a figure that says so, so the file always exists for DVC."""
    images = np.asarray(images)
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(image.transpose(1, 2, 0))
        if heatmaps is not None and heatmaps[i] is not None:
            ax.imshow(heat_overlay(heatmaps[i]))
        ax.set_title(captions[i], fontsize=8)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    fig.suptitle(title)
    save_figure(fig, path)


def subgroup_rows(audit: dict[str, Sequence[dict]], overall: dict) -> list[dict]:
    """Plot rows ``column, group, label, count, accuracy, f1, small`` for every audited group,
    after the ``all`` row (``overall``: count, accuracy, f1 of the whole split). The label marks
    small groups, so plots that show only labels still say which numbers are noisy."""
    rows = [{"column": "all", "group": "all", "label": "all", **overall, "small": 0}]
    for column, groups in audit.items():
        rows += [
            {"column": column, "label": f"{column}={g['group']}" + (" (small)" if g["small"] else ""), **g}
            for g in groups
        ]
    return [{k: r[k] for k in ("column", "group", "label", "count", "accuracy", "f1", "small")} for r in rows]


def subgroups_png(path: str | Path, rows: Sequence[dict], title: str) -> None:
    """Accuracy and F1 per group as horizontal bars (:func:`subgroup_rows`); small groups are
    hatched and labelled, not hidden."""
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(rows)))
    y = np.arange(len(rows))
    for offset, key, colour in ((-0.2, "accuracy", "tab:blue"), (0.2, "f1", "tab:orange")):
        bars = ax.barh(y + offset, [r[key] for r in rows], height=0.4, color=colour, label=key)
        for bar, row in zip(bars, rows):
            if row["small"]:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    for i, row in enumerate(rows):
        ax.text(max(row["accuracy"], row["f1"]), i, f" n={row['count']}", va="center", fontsize=8)
    ax.set_yticks(y, [r["label"] for r in rows])
    ax.invert_yaxis()  # first row on top
    ax.set(xlim=(0, 1.2), xlabel="score at the chosen threshold", title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: bars reach any length
    save_figure(fig, path)
