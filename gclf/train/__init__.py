"""Training: the model, its input pipeline and augmentation, losses, distillation and the loop both phases share."""
