"""The allocator settings: a batch's memory reused by the next batch, and the user's settings respected."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

FORWARD_FAULTS = """
import resource
import element_lightning_pose  # sets THP_MEM_ALLOC_ENABLE before torch is imported
import torch
from element_lightning_pose.engine.allocation import reuse_freed_memory

print("APPLIED", reuse_freed_memory())
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1))
x = torch.rand(8, 3, 128, 128)  # 17 MB activations, as a small batch of a pose network's
with torch.inference_mode():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        net(x)
print("FAULTS", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(script: str, **env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "ELP_SYSTEM_ALLOCATOR")}
    environment.update(env, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=120)
    assert run.returncode == 0, run.stderr
    return dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_batchs_memory_is_reused_by_the_next_instead_of_faulted_in_again():
    system = _run(FORWARD_FAULTS, ELP_SYSTEM_ALLOCATOR="1")
    ours = _run(FORWARD_FAULTS)
    assert system["APPLIED"] == "False" and ours["APPLIED"] == "True"
    # measured here: 98,070 page faults for 20 forwards with the system's settings, 676 with ours
    assert int(ours["FAULTS"]) * 10 < int(system["FAULTS"]), (ours, system)


ENVIRONMENT = """
import os
import element_lightning_pose
print("THP", os.environ.get("THP_MEM_ALLOC_ENABLE"))
"""


def test_huge_pages_are_asked_for_before_torch_unless_the_user_said_otherwise():
    assert _run(ENVIRONMENT)["THP"] == "1"
    assert _run(ENVIRONMENT, THP_MEM_ALLOC_ENABLE="0")["THP"] == "0"
    assert _run(ENVIRONMENT, ELP_SYSTEM_ALLOCATOR="1")["THP"] == "None"
    assert _run("import torch\n" + ENVIRONMENT)["THP"] == "None"  # too late: torch has read it
