"""DeepSpeed compiles its CPU ops (cpu_adam for offload, the shared-memory collectives every CPU engine
uses) the first time a process needs them: about 90 s on 2 cores on a fresh machine, once, cached in
~/.cache/torch_extensions. The session starts that build in the background as soon as it knows a DeepSpeed
engine will run, so that it overlaps the unit and integration tiers (one busy core, mostly) instead of
stalling the first DeepSpeed test. Where the ops are built already it only loads them and ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Through the accelerator, as DeepSpeed itself picks them (its CPU builders on a machine without CUDA).
BUILD = (
    "from deepspeed.accelerator import get_accelerator\n"
    "from deepspeed.ops.op_builder import CPUAdamBuilder\n"
    "CPUAdamBuilder().load()\n"
    "shm = get_accelerator().create_op_builder('ShareMemCommBuilder')\n"
    "if shm is not None and shm.is_compatible():\n"
    "    shm.load()\n"
)
_build: subprocess.Popen | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    global _build
    engines = ("distributed", "cluster")
    if _build is None and any(item.get_closest_marker(name) for item in session.items for name in engines):
        # A session of its own: Ctrl-C on the tests must not stop a build half-way, which would leave torch's
        # build lock behind and every later load waiting on it. A failed build shows in the first test that
        # loads the op, with its real error.
        _build = subprocess.Popen(
            [sys.executable, "-c", BUILD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _build is not None:
        _build.wait()  # never left running after the session (see above why it is never killed)
