"""Using a trained artifact outside the pipeline: :mod:`gclf.deploy.predict` (``gclf predict``, :class:`Predictor`)."""
