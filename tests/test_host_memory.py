"""reuse_freed_host_memory: a CPU training step reuses the pages of the last one, without page faults.

Each case runs in a fresh interpreter, since the setting is process-wide and glibc moves its thresholds
with the blocks a process has freed before."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Page faults a training step takes once warm: a small CNN on MNIST-sized images, activations of a few MiB.
_FAULTS_PER_STEP = """
import resource, sys
import torch
from trainer.host_memory import reuse_freed_host_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_host_memory()
else:  # glibc's documented 128 KiB mmap threshold, held there: its own moves it by the history of frees
    import ctypes
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)
torch.manual_seed(0)
torch.set_num_threads(1)  # one arena: the main thread allocates and frees every block
nn = torch.nn
model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                      nn.Flatten(), nn.Linear(64 * 28 * 28, 10))
optimizer = torch.optim.AdamW(model.parameters())
images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
def step():
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
    optimizer.zero_grad()
for _ in range(10):
    step()
per_step = []  # faults a step in four 5-step windows
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    per_step.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
print(*per_step)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP, mode], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    windows = [int(word) for word in done.stdout.split()]
    # glibc's defaults fault from the start (and move their thresholds later); with the setting, the heap
    # settles at its own pace: its steady state is the quietest window.
    return windows[0] if mode == "default" else min(windows)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_a_training_step_reuses_the_last_steps_pages() -> None:
    default, reused = _faults("default"), _faults("reuse")
    # glibc unmaps each step's activations (a few MiB here), and the next step faults their pages in again.
    assert default > 200, default
    assert reused < default // 20, (default, reused)
