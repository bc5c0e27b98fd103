"""Stage quantize: the deployable FP32 checkpoint, an FP32 ONNX export (checked against PyTorch),
the reference project's dynamic INT8 of the Linear layers (a comparison row), and static INT8 of
the whole network (OpenVINO + NNCF, calibrated on a seeded sample of train images); each scored
on the test split. Every artifact carries its meta (architecture, image size, classes, the
thresholds chosen on validation, TTA views), so `gclf predict` needs nothing else."""

from gclf.data.images import load_split
from gclf.export.artifact import ARTIFACTS, deployment_meta
from gclf.export.quantize import calibration_sample, write_artifacts
from gclf.export.runtime import load_runner
from gclf.export.scores import score_artifacts
from gclf.io import read_json, write_json
from gclf.outputs import verified
from gclf.stage import run_stage
from gclf.train.model import load_model


def main(p):
    size = p.data.image_size
    model, meta = load_model("models/train_phase2.pt")
    thresholds = read_json(verified("metrics/threshold.json"))
    temperature = thresholds["temperature"]
    meta = deployment_meta(meta, thresholds["threshold"], thresholds["tta_threshold"], p.tta.views, temperature)
    calibration = calibration_sample(load_split("train", size)[0], p.quantize.calibration_images, p.seed)
    write_artifacts(model, meta, calibration)

    images, labels, _ = load_split("test", size)
    runners = {name: load_runner(path, p.threads) for name, path in ARTIFACTS.items()}
    write_json("metrics/quantize.json", score_artifacts(runners, images, labels, thresholds["threshold"], temperature))


if __name__ == "__main__":
    run_stage(main, stage="quantize")
