"""FSDP2 (`torch.distributed.fsdp.fully_shard`): every parameter a DTensor sharded over the data-parallel ranks.

Lightning 2.6 reaches FSDP2 only through its experimental `ModelParallelStrategy`, which applies nothing to the
model and whose default mesh is tensor-parallel inside a node. `FSDP2Strategy` (trainer/distributed/strategy.py)
fixes the mesh to plain data parallelism (every rank a data-parallel rank); `shard_model` here applies
`fully_shard` from outside the model, as torchtitan's parallelize does: each repeated block first, then the root.
Torch only (no Lightning), as the models are.

The three strategy names follow Lightning's FSDP ones: `fsdp` reshards parameters after the forward pass
(ZeRO-3), `fsdp_shard_grad_op` keeps them gathered until the backward pass (ZeRO-2: more memory, fewer
all-gathers), `fsdp_cpu_offload` is `fsdp` with parameters, gradients and the optimizer step on the host.
Checkpoints are torch.distributed.checkpoint (DCP) folders, one shard file per rank, which reshard on load:
a run resumes on any number of ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer.errors import UserError

FSDP_STRATEGIES = ("fsdp", "fsdp_shard_grad_op", "fsdp_cpu_offload")  # its precisions: schema.FSDP_PRECISIONS

ModelSharding = Callable[[nn.Module, Any], None]  # (the plain model, the device mesh) -> sharded in place


@dataclass(frozen=True)
class FSDPSettings:
    reshard_after_forward: bool  # True: ZeRO-3-like; False: ZeRO-2-like
    cpu_offload: bool
    block_classes: tuple[str, ...] | None  # None: found in the model (see find_blocks)
    mixed_bf16: bool  # bf16-mixed: bf16 compute through MixedPrecisionPolicy, fp32 weights and reductions


def is_fsdp(strategy: str) -> bool:
    return strategy in FSDP_STRATEGIES


def fsdp_settings(
    strategy: str, precision: str, cpu_offload: bool | None, block_class: list[str] | None
) -> FSDPSettings:
    return FSDPSettings(
        reshard_after_forward=strategy != "fsdp_shard_grad_op",
        cpu_offload=cpu_offload if cpu_offload is not None else strategy == "fsdp_cpu_offload",
        block_classes=tuple(block_class) if block_class else None,
        mixed_bf16=precision == "bf16-mixed",
    )


def check_fsdp_offload(strategy: str, accelerator: str, cpu_offload: bool | None) -> None:
    """At fit time, on the accelerator the run has (`trainer plan` plans a GPU cluster from a login node)."""
    offload = cpu_offload if cpu_offload is not None else strategy == "fsdp_cpu_offload"
    if offload and accelerator == "cpu":
        raise UserError("FSDP's CPU offload moves a GPU's parameters to the host, and on CPU they are there already; "
                        "use trainer.strategy=fsdp, or fsdp.cpu_offload=false")  # fmt: skip


def lightning_precision(precision: str) -> str:
    """What Lightning's precision plugin does under FSDP2: bf16-mixed is FSDP2's MixedPrecisionPolicy instead of
    autocast (bf16 all-gathers and compute, fp32 gradient reductions and weights), so the plugin stays fp32."""
    return "32-true" if precision == "bf16-mixed" else precision


# ----------------------------------------------------------------------------- sharding the model


def model_classes(model: nn.Module) -> set[str]:
    return {type(module).__name__ for module in model.modules()}


def check_block_classes(model: nn.Module, block_classes: tuple[str, ...] | None) -> None:
    """The classes `fsdp.block_class` names are in the model, and none holds a weight tied to one outside it."""
    if not block_classes:
        return
    present = model_classes(model)
    for name in block_classes:
        if name not in present:
            repeated = sorted({type(m).__name__ for _, m in _repeated_blocks(model)}) or sorted(present)[:8]
            raise UserError(f"fsdp.block_class={name!r} is not a class of this model; its blocks are "
                            f"{', '.join(repeated)}")  # fmt: skip
    root = type(model).__name__
    if root in block_classes:
        raise UserError(f"fsdp.block_class={root!r} is the model itself, which is always sharded last; name the "
                        "class of its repeated blocks, or leave fsdp.block_class unset")  # fmt: skip
    tied = _tied_names(model)
    for name, block in _named_blocks(model, block_classes):
        what = f"fsdp.block_class={type(block).__name__!r}"
        if type(block).forward is nn.Module.forward:  # ModuleList, ModuleDict: containers FSDP2 cannot shard
            raise UserError(f"{what} is a container without a forward of its own; name the class of the blocks "
                            "it holds")  # fmt: skip
        if not any(True for _ in block.parameters()):
            raise UserError(f"{what} holds no weights; name the class of the model's repeated blocks")
        weight = _tied_outside(name, tied)
        if weight is not None:
            raise UserError(f"{what}: its weight {weight} is tied to one outside it, and FSDP2 shards a weight in "
                            "one unit only; name another class, or leave fsdp.block_class unset")  # fmt: skip


def find_blocks(model: nn.Module, block_classes: tuple[str, ...] | None) -> list[nn.Module]:
    """The units sharded before the root, outermost first: instances of the named classes; else the classes a
    Transformers model lists as its blocks (`_no_split_modules`), else the members of every nn.ModuleList (the
    repeated blocks of the shipped Transformer and of most custom models), else the root's children that hold
    parameters (CNN: features, head; LSTM: embedding, recurrence, head). A unit found (not named) whose weight is
    tied to one outside it (an embedding shared with the output head) is left to the root."""
    if block_classes:
        return [block for _, block in _named_blocks(model, block_classes)]
    listed = {name for m in model.modules() for name in getattr(m, "_no_split_modules", None) or ()}
    found = (
        _named_blocks(model, tuple(listed))
        if listed
        else _repeated_blocks(model) or [(n, c) for n, c in model.named_children() if any(True for _ in c.parameters())]
    )
    tied = _tied_names(model)
    return [block for name, block in found if _tied_outside(name, tied) is None]


def _named_blocks(model: nn.Module, classes: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    return _outermost([(n, m) for n, m in model.named_modules() if type(m).__name__ in classes and m is not model])


def _repeated_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    return _outermost([(f"{name}.{i}", block) for name, modules in lists for i, block in enumerate(modules)])


def _outermost(blocks: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Blocks not inside another block: FSDP2 shards nested units too, but one level is what the blocks mean."""
    inner = {id(sub) for _, block in blocks for sub in block.modules() if sub is not block}
    return [(name, block) for name, block in blocks if id(block) not in inner]


def _tied_names(model: nn.Module) -> list[list[str]]:
    """Every parameter's names, for those that have several (tied weights)."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def _tied_outside(block_name: str, tied: list[list[str]]) -> str | None:
    """A name, inside the block, of a weight tied to one outside it."""
    prefix = block_name + "."
    for group in tied:
        inside = [name for name in group if name.startswith(prefix)]
        if inside and len(inside) < len(group):
            return inside[0]
    return None


def model_sharding(settings: FSDPSettings) -> ModelSharding:
    def shard(model: nn.Module, mesh: Any) -> None:
        shard_model(model, mesh["data_parallel"], settings)

    return shard


def shard_model(model: nn.Module, mesh: Any, settings: FSDPSettings) -> None:
    """fully_shard each block, then the root; a model already sharded (a second fit or test on it) is left."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):
        return
    bf16 = settings.mixed_bf16
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    common: dict[str, Any] = {
        "mesh": mesh,
        "reshard_after_forward": settings.reshard_after_forward,
        "offload_policy": CPUOffloadPolicy() if settings.cpu_offload else OffloadPolicy(),
    }
    for block in find_blocks(model, settings.block_classes):
        fully_shard(block, mp_policy=policy, **common)
    # The root's outputs (the logits) in fp32, as autocast would give them to the loss.
    root_policy = MixedPrecisionPolicy(param_dtype=policy.param_dtype, reduce_dtype=torch.float32,
                                       output_dtype=torch.float32 if bf16 else None)  # fmt: skip
    fully_shard(model, mp_policy=root_policy, **common)
