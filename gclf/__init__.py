"""gclf: a reproducible DVC pipeline for an EfficientNet face gender classifier."""

__version__ = "0.1.0"
