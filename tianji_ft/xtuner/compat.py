"""Compatibility patches for XTuner 0.2.0 on today's torch, applied only in launched processes.

``tianji_ft.xtuner.entry`` calls :func:`apply_all` before it runs an XTuner
tool module; importing ``tianji_ft`` never patches anything. Each patch names
the symptom it fixes and applies only when it is needed (the CPU patches only
where CUDA is absent). ``tests/xtuner/test_compat.py`` checks for every patch
that the symptom still exists without it and is gone with it, so a patch that
stops working or becomes unnecessary fails the suite.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

# Environment for every launched XTuner process (the tutorials export these by hand).
LAUNCH_ENV = {
    "MKL_SERVICE_FORCE_INTEL": "1",
    "MKL_THREADING_LAYER": "GNU",
    # torch >= 2.6 loads checkpoints with weights_only=True; mmengine and
    # XTuner checkpoints hold pickled objects, so --resume fails with
    # "_pickle.UnpicklingError: Weights only load failed".
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
}


@dataclass(frozen=True)
class Patch:
    name: str
    symptom: str
    needed: Callable[[], bool]
    apply: Callable[[], None]


PATCHES: list[Patch] = []


def patch(name: str, symptom: str, needed: Callable[[], bool]):
    def register(fn: Callable[[], None]):
        PATCHES.append(Patch(name, symptom, needed, fn))
        return fn

    return register


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


def _torch_at_least(major: int, minor: int) -> bool:
    import torch

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return version >= (major, minor)


@patch("weights_only_load",
       "--resume fails on torch >= 2.6: _pickle.UnpicklingError: Weights only load failed",
       needed=lambda: _torch_at_least(2, 6))
def _weights_only_load() -> None:
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


@patch("cpu_bf16_query",
       "xtuner/model/sft.py: AttributeError: module 'torch.cpu' has no attribute 'is_bf16_supported'",
       needed=lambda: _no_cuda() and not hasattr(__import__("torch").cpu, "is_bf16_supported"))
def _cpu_bf16_query() -> None:
    import torch

    # Every CPU torch build computes in bf16 (emulated where the ISA lacks it).
    torch.cpu.is_bf16_supported = lambda including_emulation=True: True


@patch("cpu_distributed_init",
       "mmengine dist/utils.py: torch.cuda.set_device() and the nccl backend fail without CUDA "
       "under torchrun / DeepSpeed",
       needed=_no_cuda)
def _cpu_distributed_init() -> None:
    import torch.distributed as torch_dist
    from mmengine.dist import utils as dist_utils

    def init_dist_pytorch_cpu(backend, init_backend="torch", **kwargs):
        # gloo is the one CPU backend every torch build has.
        if init_backend == "deepspeed":
            import deepspeed

            deepspeed.init_distributed(dist_backend="gloo", **kwargs)
        else:
            torch_dist.init_process_group(backend="gloo", **kwargs)

    dist_utils._init_dist_pytorch = init_dist_pytorch_cpu


@patch("cpu_amp_optim_wrapper",
       "mmengine AmpOptimWrapper: AssertionError: ``AmpOptimizerWrapper`` is only available "
       "training on gpu (XTuner configs use it; CPU runs train in fp32 instead)",
       needed=_no_cuda)
def _cpu_amp_optim_wrapper() -> None:
    import torch
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    def init(self, loss_scale="dynamic", dtype=None, use_fsdp=False, **kwargs):
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        # A disabled scaler passes losses and steps through unchanged and
        # keeps the checkpoint layout ('loss_scaler' key) of a GPU run.
        self.loss_scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.cast_dtype = None

    AmpOptimWrapper.__init__ = init
    AmpOptimWrapper.optim_context = OptimWrapper.optim_context


@patch("cpu_shm_comm_build",
       "DeepSpeed on CPU JIT-compiles its shared-memory comm op with g++ at every first run in an "
       "environment (1-2 minutes); only inference all-reduce uses it, training talks through gloo",
       needed=_no_cuda)
def _cpu_shm_comm_build() -> None:
    import importlib

    # by module path: the attribute deepspeed.comm.torch is the torch package itself
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    ds_torch.build_shm_op = lambda: None


# Set by the launcher only (never inherited from the user's shell, see runner.launch_env):
# "1" drops a QLoRA config's quantization (a machine without CUDA, or checkpoint conversion);
# "if-no-cuda" lets each slurm task decide on its own machine.
DROP_QUANTIZATION_ENV = "TIANJI_FT_DROP_QUANTIZATION"
DROP_QUANTIZATION_IF_NO_CUDA = "if-no-cuda"
# Set by the training launcher: check the config's data before XTuner starts (entry.check_data).
CHECK_DATA_ENV = "TIANJI_FT_CHECK_DATA"


def drop_quantization_config() -> None:
    """Load every config without ``model.llm.quantization_config``: plain LoRA instead of QLoRA.

    bitsandbytes 4-bit cannot load without CUDA. Removing the key (rather than
    setting it to None with --cfg-options) matters: XTuner tests its presence,
    so None breaks ZeRO-3 ("'NoneType' object has no attribute
    'bnb_4bit_compute_dtype'") and makes pth_to_hf load the whole base model
    instead of building it on the meta device.
    """
    from mmengine.config import Config

    load = Config.fromfile

    def fromfile(*args, **kwargs):
        cfg = load(*args, **kwargs)
        llm = cfg.get("model", {}).get("llm")
        if isinstance(llm, dict):
            llm.pop("quantization_config", None)
        return cfg

    Config.fromfile = staticmethod(fromfile)


def cpu_deepspeed_argv(argv: list[str]) -> list[str]:
    """``--deepspeed X.json`` -> ``X_cpu_bf16.json`` where this process has no CUDA and that sibling exists.

    A slurm launch plans on a login node and cannot know the tasks' machines;
    each task picks the DeepSpeed JSON here (DeepSpeed on CPU refuses fp16).
    """
    if "--deepspeed" not in argv or not _no_cuda():
        return argv
    i = argv.index("--deepspeed") + 1
    if i < len(argv) and argv[i].endswith(".json") and not argv[i].endswith("_cpu_bf16.json"):
        sibling = argv[i][: -len(".json")] + "_cpu_bf16.json"
        if os.path.isfile(sibling):
            return [*argv[:i], sibling, *argv[i + 1:]]
    return argv


def apply_all(verbose: bool = False) -> list[str]:
    """Apply every needed patch; return the names applied."""
    applied = []
    for p in PATCHES:
        if p.needed():
            p.apply()
            applied.append(p.name)
    drop = os.environ.get(DROP_QUANTIZATION_ENV)
    if drop == "1" or (drop == DROP_QUANTIZATION_IF_NO_CUDA and _no_cuda()):
        drop_quantization_config()
        applied.append("drop_quantization_config")
    if verbose and applied:
        print(f"[tianji-ft] compatibility patches: {', '.join(applied)}", flush=True)
    return applied
