"""Faces: finding them in photos, aligning them like the training chips, reading a crop for the
classifier, and the other networks that see faces (the distillation teacher, the peers); docs/code.md."""
