"""Each compatibility patch: the symptom exists without it and is gone with it.

If a library upgrade fixes a symptom, the 'without' half fails and says the
patch can go; if a patch stops working, the 'with' half fails.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tianji_ft.xtuner import compat

torch = pytest.importorskip("torch")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU patches apply only where CUDA is absent")


def run_py(code: str, env_extra: dict | None = None, patched: bool = False) -> subprocess.CompletedProcess:
    import os

    prelude = "from tianji_ft.xtuner.compat import apply_all; apply_all()\n" if patched else ""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=180)


def test_every_patch_names_its_symptom():
    names = [p.name for p in compat.PATCHES]
    assert len(names) == len(set(names)) >= 4
    for p in compat.PATCHES:
        assert len(p.symptom) > 20, p.name


def test_apply_all_is_not_triggered_by_importing_the_package():
    r = run_py("import tianji_ft, tianji_ft.xtuner.compat, tianji_ft.xtuner.entry, tianji_ft.train.train, torch; "
               "print(hasattr(torch.cpu, 'is_bf16_supported'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


WEIGHTS_ONLY = """
import argparse, torch, tempfile, os
path = os.path.join(tempfile.mkdtemp(), "ckpt.pth")
torch.save({"meta": argparse.Namespace(seed=3)}, path)
print(torch.load(path, map_location="cpu")["meta"].seed)
"""


def test_weights_only_load_symptom_and_fix():
    without = run_py(WEIGHTS_ONLY)
    assert without.returncode != 0 and "Weights only load failed" in without.stderr
    fixed = run_py(WEIGHTS_ONLY, patched=True)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip().endswith("3")


BF16_QUERY = """
from xtuner.utils.device import get_torch_device
print(get_torch_device().is_bf16_supported())
"""


@cpu_only
@pytest.mark.slow
def test_cpu_bf16_query_symptom_and_fix():
    without = run_py(BF16_QUERY)
    assert without.returncode != 0 and "is_bf16_supported" in without.stderr
    fixed = run_py(BF16_QUERY, patched=True)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip().endswith("True")


DIST_INIT = """
from mmengine.dist import init_dist
import torch.distributed as dist
init_dist("pytorch", backend="nccl")
print(dist.get_backend(), dist.get_world_size())
"""


@cpu_only
def test_cpu_distributed_init_symptom_and_fix():
    from tianji_ft.xtuner.runner import free_port

    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    without = run_py(DIST_INIT, env)
    # the symptom itself: mmengine's pytorch init calls torch.cuda.set_device, which fails without CUDA
    assert without.returncode != 0 and "in _init_dist_pytorch" in without.stderr, without.stderr[-2000:]
    assert "torch.cuda.set_device(local_rank)" in without.stderr and "in set_device" in without.stderr
    env["MASTER_PORT"] = str(free_port())
    fixed = run_py(DIST_INIT, env, patched=True)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.split()[-2:] == ["gloo", "1"]


AMP_WRAPPER = """
import torch
from mmengine.optim import AmpOptimWrapper
layer = torch.nn.Linear(4, 1)
wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(layer.parameters(), lr=0.1), loss_scale="dynamic", dtype="float16")
before = layer.weight.detach().clone()
with wrapper.optim_context(layer):
    loss = layer(torch.ones(2, 4)).sum()
wrapper.update_params(loss)
print(bool((layer.weight != before).any()), sorted(wrapper.state_dict()))
"""


@cpu_only
def test_cpu_amp_optim_wrapper_symptom_and_fix():
    without = run_py(AMP_WRAPPER)
    assert without.returncode != 0 and "only available" in without.stderr
    fixed = run_py(AMP_WRAPPER, patched=True)
    assert fixed.returncode == 0, fixed.stderr
    last = fixed.stdout.strip().splitlines()[-1]  # DeepSpeed, imported by a patch, logs before it
    assert last.startswith("True") and "loss_scaler" in last


SHM_BUILD = """
import importlib
ds_torch = importlib.import_module("deepspeed.comm.torch")
from deepspeed.accelerator import get_accelerator
builder_cls = type(get_accelerator().create_op_builder("ShareMemCommBuilder"))
calls = []
builder_cls.load = lambda self, *a, **k: calls.append("load") or "compiled"
print(ds_torch.build_shm_op(), calls)
"""


@cpu_only
@pytest.mark.slow
def test_cpu_shm_comm_build_symptom_and_fix():
    without = run_py(SHM_BUILD)
    assert without.returncode == 0, without.stderr
    assert without.stdout.strip().endswith("compiled ['load']")  # DeepSpeed would compile the op here
    fixed = run_py(SHM_BUILD, patched=True)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip().endswith("None []")
