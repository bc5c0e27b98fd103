"""What ``gclf predict`` keeps beside its ``--out`` file: a lock against a second writer, and the
settings its rows were predicted with, which ``--resume`` checks.

``<out>.lock`` is locked (``fcntl.flock``) for the whole run, so a second ``gclf predict`` to the same
``--out`` stops at once, before it loads its model, instead of truncating the file or interleaving
its rows with the first one's. The kernel drops the lock when the process ends, however it ends, so
a killed run leaves no stale lock; the small file itself stays (deleting it while a run waits to
take it would let two runs lock two different files).

``<out>.meta.json`` records the model (the sha256 of each of its files), the threshold, the TTA
views, the shard and the columns. A ``--resume`` whose settings differ would add rows of another
model or decision rule to the file, so it stops with one line saying what differs.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from gclf.errors import UserError
from gclf.io import dumps_json, read_json, write_json
from gclf.outputs import sha256

if TYPE_CHECKING:
    from gclf.deploy.predict import Predictor

LOCK_SUFFIX = ".lock"
SETTINGS_SUFFIX = ".meta.json"
SETTINGS_DIGITS = 6  # a threshold as the rows' probabilities are written
SETTING_NAMES = {
    "model_sha256": "model",
    "threshold": "threshold",
    "tta_views": "TTA views",
    "shard": "shard",
    "columns": "columns",
}


@contextmanager
def output_lock(out: str | None) -> Iterator[None]:
    """Hold ``<out>.lock`` for the body (nothing to hold for stdout, ``out`` None); a
    :class:`UserError` at once when another process holds it."""
    if out is None:
        yield
        return
    path = Path(out + LOCK_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:  # "a+": opening never truncates the holder's pid
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise UserError(
                f"--out {out}: another gclf predict (pid {holder}) is writing it; wait for it or use another --out"
            ) from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def model_files(model_path: str) -> list[str]:
    """The files a model reads: an OpenVINO ``.xml`` takes its weights from the ``.bin`` beside it."""
    path = Path(model_path)
    return [model_path, str(path.with_suffix(".bin"))] if path.suffix.lower() == ".xml" else [model_path]


def run_settings(predictor: Predictor, shard: tuple[int, int] | None) -> dict[str, Any]:
    """What decides the rows of a run: as written to, and read back from, ``<out>.meta.json``."""
    settings = {
        "model_sha256": {Path(f).name: sha256(f) for f in model_files(predictor.model_path)},
        "threshold": predictor.threshold,
        "tta_views": list(predictor.views),
        "shard": list(shard) if shard else None,
        "columns": list(predictor.columns),
    }
    return json.loads(dumps_json(settings, digits=SETTINGS_DIGITS))


def shown(value: Any) -> str:
    if isinstance(value, dict):  # model files: name and the start of the digest
        return " ".join(f"{name} {digest[:12]}" for name, digest in value.items())
    if isinstance(value, list):
        return "/".join(map(str, value)) if all(isinstance(v, int) for v in value) else ",".join(map(str, value))
    return "none" if value is None else str(value)


def settings_differences(recorded: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    return [
        f"{name} {shown(recorded.get(key))} (now {shown(settings[key])})"
        for key, name in SETTING_NAMES.items()
        if recorded.get(key) != settings[key]
    ]


def check_and_record_settings(out: str, settings: dict[str, Any], resume: bool) -> None:
    """With ``resume`` and rows already in ``out``: stop with a :class:`UserError` unless ``<out>.meta.json``
    records these ``settings``. Then record them (a new run's, or the same again)."""
    meta = out + SETTINGS_SUFFIX
    if resume and os.path.exists(out):
        try:
            recorded = read_json(meta)
        except FileNotFoundError:
            raise UserError(
                f"--resume: {out} has no {meta}, so what predicted its rows is unknown; predict to a new --out"
            ) from None
        except (OSError, ValueError) as e:
            raise UserError(f"--resume: cannot read {meta} ({type(e).__name__}); predict to a new --out") from None
        if differences := settings_differences(recorded, settings):
            raise UserError(
                f"--resume: {out} was predicted with {'; '.join(differences)}; "
                "give the same --model, --threshold, --tta and --shard, or predict to a new --out"
            )
    write_json(meta, settings, digits=SETTINGS_DIGITS)
