"""Scoring and reporting a trained model: one scoring recipe (:mod:`gclf.evaluate.scoring`) for the test
split, outside data, the teacher and the peers; Grad-CAM, figures and the model card; docs/code.md."""
