"""Model FLOPs: what one training sample costs (forward and backward), and what a GPU does at its dense peak.

Achieved FLOP/s is flops_per_sample x samples/s, and model-FLOPs utilisation (MFU) is that over the peak.
The count comes from torch's FlopCounterMode, once per run, on the meta device (no memory, no compute)
where the model allows it, and otherwise on one sample on the CPU: the LSTM classifier packs its sequences
by their real lengths, a data-dependent step that the meta device cannot take. Either way the model runs
its portable path (ATen's LSTM as matmuls, the math of attention), whose matmuls the counter sees; the
fused cuDNN, oneDNN or flash kernels that train it do the same arithmetic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Dense (not 2:4-sparse) tensor-core peaks from NVIDIA's data sheets, in FLOP/s. Lightning's own table
# gives the H200 its sparse figure and does not recognise the name a plain H200 reports.
_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h200": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "h100 pcie": {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378.0e12, "fp32": 51.2e12},
    "h100": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM
    "a100": {"bf16": 312.0e12, "fp16": 312.0e12, "tf32": 156.0e12, "fp32": 19.5e12},
}


SMALL_MODEL_PARAMETERS = 10_000_000


def training_flops(build_model: Callable[[], nn.Module], inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward and backward pass of a freshly built model on inputs shaped like `inputs`
    (all ones: valid token ids, full-length masks). Neither the model being trained nor the random state
    is touched: a resumed run draws the same dropout masks as an uninterrupted one."""
    with torch.random.fork_rng(devices=[]):
        return _count_somewhere(build_model, inputs)


def _count_somewhere(build_model: Callable[[], nn.Module], inputs: tuple[torch.Tensor, ...]) -> int:
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build_model().parameters())
    # A small model counts faster for real on the CPU (the meta device runs its elementwise ops in Python);
    # a large one only on the meta device. The other is the fallback (see the module's docstring).
    devices = ["cpu", "meta"] if parameters <= SMALL_MODEL_PARAMETERS else ["meta", "cpu"]
    try:
        return _count(build_model, inputs, torch.device(devices[0]))
    except (NotImplementedError, RuntimeError):
        return _count(build_model, inputs, torch.device(devices[1]))


def _count(build_model: Callable[[], nn.Module], inputs: tuple[torch.Tensor, ...], device: torch.device) -> int:
    with device:
        model = build_model()
    # Float inputs in float32 like the freshly built model (a bf16-true run's are bf16): FLOPs are the same.
    stand_ins = tuple(
        torch.ones(x.shape, dtype=torch.float32 if x.is_floating_point() else x.dtype, device=device) for x in inputs
    )
    counter = FlopCounterMode(display=False)
    with counter, portable_kernels():
        model(*stand_ins).float().sum().backward()
    return counter.get_total_flops()


@contextlib.contextmanager
def portable_kernels() -> Iterator[None]:
    """Run the LSTM as plain matmuls that FlopCounterMode sees, not as one fused oneDNN or cuDNN kernel."""
    # Not torch.backends.mkldnn.flags(): it also sets oneDNN's TF32 switch, which warns on every CPU build.
    onednn, cudnn = torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled
    torch.backends.mkldnn.enabled = torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled = onednn, cudnn


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for the arithmetic `precision` (a Lightning precision string) uses; None
    where it is not in the table (every CPU, and GPUs not listed)."""
    return dense_peak(torch.cuda.get_device_name(device), precision) if device.type == "cuda" else None


def dense_peak(device_name: str, precision: str) -> float | None:
    """From the table, by the name CUDA reports ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB")."""
    name = device_name.lower()
    chip = next((chip for chip in _PEAK_FLOPS if all(word in name for word in chip.split())), None)
    arithmetic = _arithmetic(precision)
    return _PEAK_FLOPS[chip][arithmetic] if chip is not None and arithmetic is not None else None


def _arithmetic(precision: str) -> str | None:
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if precision.startswith("64"):
        return None
    # float32 convolutions and RNNs run on TF32 tensor cores by default (cudnn.allow_tf32): TF32's peak is
    # then the ceiling. For a model of float32 matmuls alone this understates MFU rather than overstate it.
    tf32 = torch.backends.cudnn.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return "tf32" if tf32 else "fp32"
