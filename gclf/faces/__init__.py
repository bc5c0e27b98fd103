"""Faces as another network sees them: the distillation teacher.

- :mod:`gclf.faces.targets`: the teacher stage's output files (per split, in manifest order) and how
  training and evaluation read them; numpy only, no teacher needed to read them;
- :mod:`gclf.faces.teacher`: dlib's face-recognition ResNet on each split image, and the logistic probe
  on its embeddings (the ``teacher`` extra: ``pip install -e ".[teacher]"``).
"""
