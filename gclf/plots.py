"""Plot data for ``dvc plots`` (CSV/TSV tables with named columns) and PNG figures for people."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from gclf.io import atomic_write, write_text  # noqa: E402
from gclf.metrics import calibration_bins  # noqa: E402


def write_table(
    path: str | Path, rows: Sequence[dict], digits: int = 4, empty_header: Sequence[str] | None = None
) -> None:
    """Rows of dicts as CSV (or TSV for a .tsv path), floats rounded so equal runs give equal bytes.

    No rows give just ``empty_header`` (an error without one: an empty table is usually a bug).
    """
    if not rows and empty_header is None:
        raise ValueError(f"{path}: no rows to write")
    buf = io.StringIO()
    delimiter = "\t" if str(path).endswith(".tsv") else ","
    fieldnames = list(rows[0]) if rows else list(empty_header)
    writer = csv.DictWriter(buf, fieldnames=fieldnames, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()})
    write_text(path, buf.getvalue())


def roc_rows(labels, probs) -> list[dict]:
    fpr, tpr, thresholds = skm.roc_curve(labels, probs)
    return [
        {"fpr": float(f), "tpr": float(t), "threshold": float(min(th, 1.0))} for f, t, th in zip(fpr, tpr, thresholds)
    ]


def pr_rows(labels, probs) -> list[dict]:
    precision, recall, _ = skm.precision_recall_curve(labels, probs)
    return [{"recall": float(r), "precision": float(p)} for p, r in zip(precision, recall)]


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    )
    plt.close(fig)


def training_curves_png(path: str | Path, history: Sequence[dict], title: str) -> None:
    """Loss and validation AUC/accuracy per epoch, side by side (a note when no epoch ran)."""
    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if not history:
        fig.text(0.5, 0.5, f"{title}: no epochs run (epochs = 0)", ha="center", va="center", fontsize=14)
    for key in ("train_loss", "val_loss"):
        left.plot(epochs, [r[key] for r in history], marker="o", label=key)
    for key in ("train_accuracy", "val_accuracy", "val_auc"):
        right.plot(epochs, [r[key] for r in history], marker="o", label=key)
    left.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    right.set(xlabel="epoch", ylabel="score", title=f"{title}: accuracy / AUC")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def evaluation_png(path: str | Path, labels, probs, threshold: float, title: str) -> None:
    """ROC, precision-recall, confusion matrix and reliability diagram of one predictor."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    roc = roc_rows(labels, probs)
    axes[0].plot([r["fpr"] for r in roc], [r["tpr"] for r in roc])
    axes[0].plot([0, 1], [0, 1], ls="--", c="grey")
    axes[0].set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC (AUC {skm.roc_auc_score(labels, probs):.3f})",
    )
    pr = pr_rows(labels, probs)
    axes[1].plot([r["recall"] for r in pr], [r["precision"] for r in pr])
    axes[1].set(xlabel="recall (female)", ylabel="precision (female)", title="precision-recall")
    cm = skm.confusion_matrix(labels, probs >= threshold, labels=[0, 1])
    axes[2].imshow(cm, cmap="Blues")
    for (i, j), n in np.ndenumerate(cm):
        axes[2].text(j, i, str(n), ha="center", va="center", color="black" if n < cm.max() / 2 else "white")
    axes[2].set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["male", "female"],
        yticklabels=["male", "female"],
        xlabel="predicted",
        ylabel="actual",
        title=f"confusion at threshold {threshold:.2f}",
    )
    rel = calibration_bins(labels, probs)
    axes[3].plot([0, 1], [0, 1], ls="--", c="grey")
    axes[3].plot([r["confidence"] for r in rel], [r["observed"] for r in rel], marker="o")
    axes[3].set(xlabel="predicted probability (female)", ylabel="observed female rate", title="reliability")
    fig.suptitle(title)
    save_figure(fig, path)


def threshold_png(path: str | Path, rows: Sequence[dict], chosen: float, criterion: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in ("f1", "balanced_accuracy", "youden"):
        ax.plot([r["threshold"] for r in rows], [r[key] for r in rows], label=key)
    ax.axvline(chosen, c="black", ls="--", label=f"chosen {chosen:.2f} ({criterion})")
    ax.set(xlabel="threshold on P(female)", ylabel="score on validation", title="threshold sweep (validation split)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


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
