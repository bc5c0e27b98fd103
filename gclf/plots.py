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


def write_table(path: str | Path, rows: Sequence[dict], digits: int = 4) -> None:
    """Rows of dicts as CSV (or TSV for a .tsv path), floats rounded so equal runs give equal bytes."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    buf = io.StringIO()
    delimiter = "\t" if str(path).endswith(".tsv") else ","
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
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
    """Loss and validation AUC/accuracy per epoch, side by side."""
    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
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
