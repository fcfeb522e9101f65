"""tianji_ft: fine-tune Chinese chat models with XTuner.

Importing this package is cheap: torch, transformers and xtuner are only
imported inside the functions that need them.
"""

__version__ = "0.1.0"
