"""DeepSpeed's C++ ops that a run compiles on first use, and one line on stderr while that happens.

DeepSpeed builds some of its ops just in time, through torch's cpp_extension, and keeps them in
$TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions): on a CPU, its shared-memory collectives
(`deepspeed_shm_comm`, at every DeepSpeed start) and, with the optimizer offloaded, its vectorised Adam
(`cpu_adam`). The first build on a machine takes minutes with nothing on screen; later runs load the
cached library in about a second (benchmarks/startup.py measures both). torch's own file lock lets one
process build while the others wait, so one line per machine is enough.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trainer.distributed.deepspeed_config import ZeroSettings
from trainer.errors import UserError


def _builders(accelerator: str, zero: ZeroSettings) -> list[str]:
    """DeepSpeed builder classes the run will load: its comm layer's on a CPU, CPU Adam under offload."""
    names = ["ShareMemCommBuilder"] if accelerator == "cpu" else []
    if zero.offload_optimizer:
        names.append("CPUAdamBuilder")
    return names


def ops_to_build(accelerator: str, zero: ZeroSettings) -> list[tuple[str, Path]]:
    """(op name, build folder) of each op this run will compile: not installed with DeepSpeed and not in
    the extensions cache yet."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from torch.utils.cpp_extension import _get_build_directory

    missing = []
    for builder_name in _builders(accelerator, zero):
        builder = get_accelerator().create_op_builder(builder_name)
        if builder is None or installed_ops.get(builder.name, False):
            continue  # not used on this accelerator, or compiled into the DeepSpeed install
        try:  # the folder DeepSpeed builds in: made here if missing, as torch's build would
            folder = Path(_get_build_directory(builder.name, verbose=False))
        except OSError as err:
            raise UserError(
                f"DeepSpeed cannot build its {builder.name} op in TORCH_EXTENSIONS_DIR "
                f"({os.environ.get('TORCH_EXTENSIONS_DIR') or 'its default, ~/.cache/torch_extensions'}): "
                f"{err.strerror}; point TORCH_EXTENSIONS_DIR at a writable folder"
            ) from None
        if not (folder / f"{builder.name}.so").is_file():
            missing.append((builder.name, folder))
    return missing


def say_what_will_be_built(accelerator: str, zero: ZeroSettings) -> None:
    """One line on stderr, from the first process of each machine, before the build starts."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    missing = ops_to_build(accelerator, zero)
    if not missing:
        return
    names = " and ".join(name for name, _ in missing)
    cache = missing[0][1].parent
    print(f"trainer: compiling DeepSpeed's {names} for this machine, once (a minute or two); later runs load it "
          f"from {cache} (TORCH_EXTENSIONS_DIR)", file=sys.stderr, flush=True)  # fmt: skip
