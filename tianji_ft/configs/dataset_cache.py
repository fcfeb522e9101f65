"""The import path rendered configs (and configs users copied) name for the cached dataset builder.

The builder runs inside training, so it lives in :mod:`tianji_ft.xtuner.dataset_cache`;
this module keeps ``tianji_ft.configs.dataset_cache.cached_process_hf_dataset`` working.
"""

from tianji_ft.xtuner.dataset_cache import *  # noqa: F401,F403
from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset  # noqa: F401
