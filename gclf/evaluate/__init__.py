"""Scoring and reporting a trained model: one scoring recipe for the test split, external data, the
teacher and the peers (:mod:`gclf.evaluate.scoring`)."""
