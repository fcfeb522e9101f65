"""The versioned XTuner config pack (``xtuner_configs/``) and what reads it.

``table.py`` + ``template.py`` -> ``render.py`` -> ``xtuner_configs/NAME.py``;
``registry.py`` finds and describes them without running them; ``settings.py``
lists the TIANJI_* variables they read; ``download.py`` fetches their models.
Nothing here imports torch, transformers, mmengine or xtuner at import time.
"""
