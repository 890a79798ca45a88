"""`trainer.strategy` -> a Lightning strategy: auto, DDP, DeepSpeed ZeRO 1-3 (with offload) or FSDP2, on GPU or CPU."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    ModelParallelStrategy,
    Strategy,
    StrategyRegistry,
)

from trainer.config.schema import RunConfig
from trainer.distributed.batching import BatchPlan
from trainer.distributed.deepspeed_config import (
    ZeroSettings,
    build_deepspeed_config,
    read_user_config,
    validate_deepspeed_config,
)
from trainer.distributed.deepspeed_ops import say_what_will_be_built
from trainer.distributed.fsdp import (
    ModelSharding,
    check_fsdp_offload,
    fsdp_settings,
    is_fsdp,
    model_sharding,
)
from trainer.distributed.topology import Topology
from trainer.errors import UserError
from trainer.tasks.optim import OptimizerFactory


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy on CPU processes over gloo.

    DeepSpeed itself runs ZeRO 1-3 on CPU; Lightning's strategy refuses any accelerator but CUDA.
    This lifts its three CUDA-only assumptions (the accelerator check, the device-index check and a
    CUDA root device) so that tests and CI run real ZeRO engines with several CPU processes.
    """

    strategy_name = "deepspeed_cpu"

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # skips DeepSpeedStrategy's CUDA-only check

    def setup_distributed(self) -> None:
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        # DeepSpeed prints "... deepspeed_shm_comm_op built successfully" at every start, built or loaded from
        # the cache: dropped; anything else it prints passes (trainer/distributed/deepspeed_ops.py says when an
        # op is really being compiled).
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            self._init_deepspeed_distributed()
        kept = [line for line in printed.getvalue().splitlines() if not line.endswith("built successfully")]
        if kept:
            print("\n".join(kept), flush=True)

    @property
    def root_device(self) -> torch.device:
        # DeepSpeed reads the index as the device rank; without one it falls back to a world of one.
        return torch.device("cpu", 0)


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ModelParallelStrategy as plain FSDP2 data parallelism: a one-dimensional data-parallel mesh over
    every rank (no tensor parallelism), gloo for CPU processes and NCCL for GPUs, sharded (DCP) checkpoints."""

    strategy_name = "fsdp2"

    def __init__(self, world_size: int, accelerator: str) -> None:
        # gloo only for CPU tensors: a GPU machine's mesh and collectives stay on NCCL.
        super().__init__(
            data_parallel_size=world_size,
            tensor_parallel_size=1,
            save_distributed_checkpoint=True,
            process_group_backend="gloo" if accelerator == "cpu" else "nccl",
        )

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(checkpoint_path))
        if path.is_dir():
            return super().load_checkpoint(path, weights_only=weights_only)
        return self._load_plain_checkpoint(path)

    def _load_plain_checkpoint(self, path: Path) -> dict[str, Any]:
        """A checkpoint of one process or DDP (full tensors; optimizer state keyed by position), sharded as it loads.

        Lightning 2.6 maps positions to names in `named_parameters()` order, which is not the optimizer's when its
        param groups reorder the parameters (weight decay or not): a resume then fails on mismatched shapes. The
        positions are the optimizer's own order, which the sharded optimizer keeps (the same groups, built by the
        same code), so they are mapped through it here."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        assert self.model is not None and self.lightning_module is not None
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        options = StateDictOptions(full_state_dict=True, strict=self.lightning_module.strict_loading)
        set_model_state_dict(self.model, checkpoint.pop("state_dict"), options=options)
        names = {id(p): name for name, p in self.model.named_parameters()}
        for optimizer, saved in zip(self.optimizers, checkpoint.pop("optimizer_states", []), strict=True):
            order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
            by_name = {
                "state": {order[position]: value for position, value in saved["state"].items()},
                "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in saved["param_groups"]],
            }
            set_optimizer_state_dict(self.model, optimizer, by_name, options=options)
        return checkpoint


def is_deepspeed(strategy: str) -> bool:
    return strategy.startswith("deepspeed")


def is_sharded(strategy: str) -> bool:
    """Model state split over the ranks (DeepSpeed ZeRO or FSDP2): no rank can run the model alone."""
    return is_deepspeed(strategy) or is_fsdp(strategy)


def sharding_of(cfg: RunConfig) -> ModelSharding | None:
    """What shards the task's model when Lightning sets it up (FSDP2); None for every other strategy."""
    if not is_fsdp(cfg.trainer.strategy):
        return None
    f = cfg.fsdp
    return model_sharding(fsdp_settings(cfg.trainer.strategy, cfg.trainer.precision, f.cpu_offload, f.block_class))


def zero_settings(cfg: RunConfig) -> ZeroSettings | None:
    """Stage and offloads of a DeepSpeed strategy: Lightning's registered meaning of the name
    (`deepspeed_stage_3_offload` -> stage 3, both offloads), with `deepspeed.offload_*` over it."""
    if not is_deepspeed(cfg.trainer.strategy):
        return None
    registered = StrategyRegistry[cfg.trainer.strategy]["init_params"]
    chosen = cfg.deepspeed
    zero = ZeroSettings(
        stage=registered["stage"],
        offload_optimizer=_either(chosen.offload_optimizer, registered.get("offload_optimizer", False)),
        offload_parameters=_either(chosen.offload_parameters, registered.get("offload_parameters", False)),
    )
    if zero.offload_parameters and zero.stage != 3:
        raise UserError("deepspeed.offload_parameters needs ZeRO stage 3; use trainer.strategy=deepspeed_stage_3")
    return zero


def _either(chosen: bool | None, default: bool) -> bool:
    return default if chosen is None else chosen


def offloads_optimizer(cfg: RunConfig) -> bool:
    zero = zero_settings(cfg)
    return zero is not None and zero.offload_optimizer


def optimizer_factory(cfg: RunConfig) -> OptimizerFactory | None:
    """ZeRO-Offload runs the optimizer step on the CPU, where DeepSpeed requires its vectorised
    `DeepSpeedCPUAdam` (compiled on first use); other strategies take the task's own optimizer."""
    if not offloads_optimizer(cfg):
        return None

    def cpu_adam(groups: list[dict[str, Any]], optim: dict[str, Any]) -> torch.optim.Optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=optim["lr"], betas=tuple(optim["betas"]), adamw_mode=True)

    return cpu_adam


def check_strategy_settings(cfg: RunConfig) -> dict[str, Any] | None:
    """Fail fast on settings that do not go together; return the validated user DeepSpeed config."""
    # A strategy's own settings with another strategy, and FSDP2's precisions: refused by the schema (RunConfig).
    if not is_deepspeed(cfg.trainer.strategy):
        return None
    if offloads_optimizer(cfg) and cfg.optim.name != "adamw":
        raise UserError("optimizer offload runs DeepSpeed's CPU Adam; set optim.name=adamw or drop the offload")
    if cfg.trainer.gradient_clip_algorithm == "value":
        raise UserError("DeepSpeed clips gradients by norm only; set trainer.gradient_clip_algorithm=norm")
    user_config = read_user_config(cfg.deepspeed.config)
    validate_deepspeed_config(user_config)
    return user_config


def check_on_accelerator(cfg: RunConfig, accelerator: str) -> None:
    """What the accelerator the run has rules out: fp16 and FSDP2's CPU offload on a CPU."""
    check_precision(cfg.trainer.precision, accelerator)
    if is_fsdp(cfg.trainer.strategy):
        check_fsdp_offload(cfg.trainer.strategy, accelerator, cfg.fsdp.cpu_offload)


def check_precision(precision: str, accelerator: str) -> None:
    """fp16 on CPU is not supported by Lightning's mixed precision and overflows as pure fp16: a NaN loss
    a few steps in would be reported as divergence. bf16 works on CPU."""
    if accelerator == "cpu" and precision in ("16-mixed", "16-true"):
        raise UserError(f"trainer.precision={precision} needs a GPU; on CPU use bf16-mixed, bf16-true or 32")


def build_strategy(cfg: RunConfig, plan: BatchPlan, topology: Topology, load_universal: bool = False) -> str | Strategy:
    """`load_universal`: resume from a checkpoint converted to DeepSpeed's universal format."""
    name = cfg.trainer.strategy
    if is_fsdp(name):
        return FSDP2Strategy(topology.world_size, topology.accelerator)
    if not is_deepspeed(name):
        if name == "ddp":
            # Gradients as views into DDP's all-reduce buckets: one copy of them instead of two (Lightning
            # leaves torch's default, False), so DDP's model state is the 16 bytes per parameter of the ZeRO paper.
            backend = "gloo" if topology.accelerator == "cpu" else None
            return DDPStrategy(process_group_backend=backend, gradient_as_bucket_view=True)
        return name
    user_config = check_strategy_settings(cfg) or {}
    zero = zero_settings(cfg)
    assert zero is not None  # a DeepSpeed strategy
    config = build_deepspeed_config(user_config, zero, plan.micro_batch_size)
    say_what_will_be_built(topology.accelerator, zero)
    if load_universal:
        config.setdefault("checkpoint", {})["load_universal"] = True
    strategy_cls = CPUDeepSpeedStrategy if topology.accelerator == "cpu" else DeepSpeedStrategy
    kwargs: dict[str, Any] = {"config": config}
    if topology.accelerator == "cpu":
        kwargs["process_group_backend"] = "gloo"
    return strategy_cls(**kwargs)
