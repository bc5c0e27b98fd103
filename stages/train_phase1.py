"""Stage train_phase1: train the head on a frozen backbone (Adam + ReduceLROnPlateau)."""

from gclf.data.images import load_split
from gclf.device import select_device
from gclf.stage import run_stage
from gclf.train.distill import make_distiller
from gclf.train.loop import FitConfig
from gclf.train.model import artifact_meta, build_model, load_backbone_weights
from gclf.train.optim import adam_plateau, freeze_backbone
from gclf.train.phases import run_phase, save_phase
from gclf.train.seeds import seed_everything
from gclf.train.state import state_path


def main(p):
    device = select_device(p.device, p.threads)
    train, val = load_split("train", p.data.image_size), load_split("val", p.data.image_size)
    seed_everything(p.seed)  # the model's initial weights
    model = build_model(p.model.arch, p.model.head, p.model.dropout, p.model.pretrained)
    if p.model.weights:
        missing, unexpected = load_backbone_weights(model, p.model.weights)
        print(f"loaded {p.model.weights}: {len(missing)} missing keys, {len(unexpected)} unexpected keys")
    distiller = make_distiller(p, model)  # None unless distill.enabled
    trained = freeze_backbone(model) + (list(distiller.projection.parameters()) if distiller else [])
    optimizer, scheduler = adam_plateau(
        trained,
        p.phase1.lr,
        p.phase1.weight_decay,
        p.phase1.plateau_factor,
        p.phase1.plateau_patience,
        p.phase1.monitor,
    )
    cfg = FitConfig(
        epochs=p.phase1.epochs,
        batch_size=p.phase1.batch_size,
        monitor=p.phase1.monitor,
        seed=p.seed,
        freeze_backbone=True,
        weighted_sampler=p.data.weighted_sampler,
        num_workers=p.data.num_workers,
        cpu_bf16=p.cpu_bf16,
    )
    inputs = ["data/splits/train.csv", "data/splits/val.csv"] + (["data/teacher/teacher.json"] if distiller else [])
    result = run_phase(
        "train_phase1", p, model, optimizer, scheduler, cfg, train[:2], val[:2], device, inputs, distiller
    )
    meta = artifact_meta(p.model.arch, p.model.head, p.model.dropout, p.data.image_size, model)
    save_phase("train_phase1", result, meta, cfg.monitor)


if __name__ == "__main__":
    run_stage(main, state=state_path("train_phase1"), stage="train_phase1")
