"""Stage teacher: with distill.enabled, embed every split image with dlib's face-recognition ResNet,
fit a logistic probe on train, and write each split's embeddings and probabilities to data/teacher/
(the targets the training stages distil); without, write a marker that says it did not run."""

import os

import numpy as np

from gclf.faces.teacher import run_teacher, write_disabled
from gclf.io import write_json
from gclf.stage import run_stage


def main(p):
    if not p.distill.enabled:
        write_disabled()
        write_json("metrics/teacher.json", {"teacher_enabled": 0})
        return
    metrics = run_teacher(
        seed=p.seed,
        probe_c=p.distill.probe_c,
        criterion=p.threshold.metric,
        thresholds=np.linspace(p.threshold.min, p.threshold.max, p.threshold.steps),
        kind=p.distill.teacher,
        workers=p.threads or os.cpu_count() or 1,  # dlib computes holding Python's lock: processes
    )
    write_json("metrics/teacher.json", {"teacher_enabled": 1, **metrics})


if __name__ == "__main__":
    run_stage(main, stage="teacher")
