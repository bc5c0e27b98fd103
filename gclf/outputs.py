"""All-or-nothing stage outputs: a manifest written last, and readers that refuse a mixed set.

DVC fixes each output's path, so a stage cannot swap its whole set in with one rename. Instead each
stage has a manifest among its outs in dvc.yaml (``<dir>/<stage>.manifest.json``). Before the stage
replaces any file the manifest is marked pending; once the last file is in place (each one written
whole and fsynced by :func:`gclf.io.atomic_write`) it lists every output's sha256. A reader of a file
that a manifest beside it (or one folder up) lists checks the whole set first (:func:`verified`): a
pending manifest (the stage was killed or failed midway) or a file that differs from it (two runs
mixed, or a ``git checkout`` without ``dvc checkout``) is refused with one line that says what to
run. A file no manifest lists, such as a model of the user's own, is read as it is.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from gclf.errors import UserError
from gclf.io import read_json, write_json

MANIFEST_SUFFIX = ".manifest.json"
_BEING_WRITTEN: set[Path] = set()  # this process's pending manifests: its own outputs are read freely


class IncompleteOutputs(UserError):
    """A file belongs to a stage's output set that is pending or does not match its manifest."""


def stage_outs(stage: str, dvc_yaml: str | os.PathLike = "dvc.yaml") -> list[str]:
    """The paths of ``stage``'s outs, metrics and plots in ``dvc_yaml``, in the order listed."""
    with open(dvc_yaml, encoding="utf-8") as f:
        spec = yaml.safe_load(f)["stages"][stage]
    entries = [e for key in ("outs", "metrics", "plots") for e in spec.get(key, [])]
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(outs: list[str]) -> list[Path]:
    """Each out, or each file under an out that is a directory, in sorted order."""
    files: list[Path] = []
    for out in map(Path, outs):
        files.extend(sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else [out])
    return files


def _name(path: Path, manifest: Path) -> str:
    return Path(os.path.relpath(path, manifest.parent)).as_posix()


@contextmanager
def output_set(stage: str, dvc_yaml: str | os.PathLike = "dvc.yaml") -> Iterator[Path]:
    """Mark ``stage``'s manifest pending, run the body, then seal the manifest with each output's hash.

    When the body raises (or the process dies) the manifest stays pending, so readers refuse the
    set until the stage runs again to the end.
    """
    outs = stage_outs(stage, dvc_yaml)
    manifests = [Path(o) for o in outs if o.endswith(MANIFEST_SUFFIX)]
    if len(manifests) != 1:
        raise UserError(f"{dvc_yaml}: stage {stage} must list exactly one *{MANIFEST_SUFFIX} out")
    manifest, others = manifests[0], [o for o in outs if not o.endswith(MANIFEST_SUFFIX)]
    write_json(manifest, {"complete": False, "stage": stage, "files": sorted(_name(Path(o), manifest) for o in others)})
    _BEING_WRITTEN.add(manifest.resolve())
    try:
        yield manifest
        missing = [o for o in others if not Path(o).exists()]
        if missing:
            raise UserError(f"stage {stage} did not write {', '.join(missing)}")
        hashes = {_name(p, manifest): sha256(p) for p in _files(others)}
        write_json(manifest, {"complete": True, "stage": stage, "files": hashes})
    finally:
        _BEING_WRITTEN.discard(manifest.resolve())


def verified(path: str | os.PathLike) -> Path:
    """``path``, after checking the set it belongs to (a manifest beside it, or in the folder above,
    lists it): raises
    :class:`IncompleteOutputs` when that manifest is pending or a file differs from its hash."""
    path = Path(path)
    beside_or_above = [*path.parent.glob(f"*{MANIFEST_SUFFIX}"), *path.parent.parent.glob(f"*{MANIFEST_SUFFIX}")]
    for manifest in sorted(set(beside_or_above)):
        try:
            record = read_json(manifest)
        except (OSError, ValueError):
            raise IncompleteOutputs(f"{manifest}: unreadable; run `dvc checkout` or `dvc repro`") from None
        if _name(path, manifest) not in record.get("files", ()) or manifest.resolve() in _BEING_WRITTEN:
            continue
        stage = record.get("stage", manifest.name.removesuffix(MANIFEST_SUFFIX))
        if not record.get("complete"):
            raise IncompleteOutputs(
                f"{path}: stage {stage} stopped before it finished writing its outputs ({manifest} is pending); "
                "run `dvc repro` to finish it"
            )
        for name, expected in record["files"].items():
            member = manifest.parent / name
            if not member.is_file() or sha256(member) != expected:
                state = "is missing" if not member.is_file() else "differs"
                raise IncompleteOutputs(
                    f"{path}: {member} {state} from the set {manifest} records (files from two runs); "
                    "run `dvc checkout` or `dvc repro`"
                )
    return path
