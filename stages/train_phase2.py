"""Stage train_phase2: fine-tune the whole network from phase 1 (AdamW, layer-wise LR decay,
one-cycle or cosine schedule, gradient clipping, EMA, early stopping)."""

from gclf.data.images import load_split
from gclf.device import init_distributed, select_device
from gclf.stage import run_stage
from gclf.train.distill import make_distiller
from gclf.train.loop import FitConfig
from gclf.train.model import load_model
from gclf.train.optim import adamw_schedule
from gclf.train.phases import run_phase, save_phase
from gclf.train.pipeline import progressive_sizes
from gclf.train.state import state_path


def main(p):
    device = select_device(p.device, p.threads)
    train, val = load_split("train", p.data.image_size), load_split("val", p.data.image_size)
    model, meta = load_model("models/train_phase1.pt")
    world = init_distributed()[1]
    distiller = make_distiller(p, model)  # None unless distill.enabled; a fresh projection
    steps_per_epoch = max(len(train[1]) // (p.phase2.batch_size * world), 1)
    optimizer, scheduler = adamw_schedule(
        model,
        p.phase2.lr,
        p.phase2.weight_decay,
        p.phase2.layer_decay,
        p.phase2.schedule,
        p.phase2.warmup_fraction,
        p.phase2.epochs * steps_per_epoch,
        (p.phase2.plateau_factor, p.phase2.plateau_patience, p.phase2.monitor),
        extra=distiller.projection if distiller else None,
    )
    cfg = FitConfig(
        epochs=p.phase2.epochs,
        batch_size=p.phase2.batch_size,
        monitor=p.phase2.monitor,
        seed=p.seed,
        grad_clip=p.phase2.grad_clip,
        ema_decay=p.phase2.ema_decay,
        early_stop_patience=p.phase2.early_stop_patience,
        weighted_sampler=p.data.weighted_sampler,
        num_workers=p.data.num_workers,
        cpu_bf16=p.cpu_bf16,
        epoch_sizes=progressive_sizes(p.phase2.start_size, p.data.image_size, p.phase2.epochs),
    )
    inputs = ["data/splits/train.csv", "data/splits/val.csv", "models/train_phase1.pt"]
    inputs += ["data/teacher/teacher.json"] if distiller else []
    result = run_phase(
        "train_phase2", p, model, optimizer, scheduler, cfg, train[:2], val[:2], device, inputs, distiller
    )
    save_phase("train_phase2", result, meta, cfg.monitor)


if __name__ == "__main__":
    run_stage(main, state=state_path("train_phase2"), stage="train_phase2")
