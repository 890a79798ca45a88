"""`trainer plan`: what a recipe needs on a cluster shape, worked out without a GPU.

Memory per GPU is for model states (weights, gradients, optimizer) under mixed-precision Adam (FSDP2's rows
follow the recipe's precision: its gathered weights are bf16 or fp32):
DeepSpeed's own estimators for ZeRO-2 and ZeRO-3, the ZeRO paper's accounting for DDP and ZeRO-1
(DeepSpeed has no estimator for those) and FSDP2's sharding (fp32 shards of weights, gradients and Adam's
moments, 16/N bytes per parameter, plus the units it gathers to compute). Activations come on top and
grow with the micro batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from trainer.config.model_args import model_kwargs
from trainer.config.schema import RunConfig
from trainer.distributed.batching import BatchPlan, plan_batches
from trainer.distributed.fsdp import check_block_classes, find_blocks
from trainer.errors import UserError, error_with_place
from trainer.models import build_model

GIB = 1024**3
HEAD_NODE_VARIABLE = "$HEAD_NODE"  # the printed commands' default rendezvous host
# What a plan assumes where the data decide at run time (the tokenizer's size, the label count).
ASSUMED_CHAR_VOCAB = 256
ASSUMED_CLASSES = {"image_classification": 10, "text_classification": 2}
ASSUMED_IMAGE_CHANNELS = 3
ASSUMED_IMAGE_SIZE = (32, 32)  # a custom image model may size its layers by the image (CIFAR's)


@dataclass(frozen=True)
class MemoryRow:
    strategy: str
    gpu_bytes: int
    cpu_bytes: int
    source: str


@dataclass(frozen=True)
class Plan:
    batches: BatchPlan
    parameters: int
    largest_layer: int
    memory: list[MemoryRow]
    gpu_memory_bytes: int | None
    commands: list[str]


def count_parameters(cfg: RunConfig) -> tuple[int, int, int]:
    """(total, largest layer, largest FSDP2 unit), from the recipe's model built on the meta device (no memory,
    no data)."""
    tokenizer = cfg.data.tokenizer
    vocab = (ASSUMED_CHAR_VOCAB if tokenizer.kind == "char" else tokenizer.vocab_size) if tokenizer else 0
    facts = {
        "vocab_size": vocab,
        "num_classes": ASSUMED_CLASSES.get(cfg.task, 0),
        "in_channels": cfg.data.image_channels or ASSUMED_IMAGE_CHANNELS,
        "image_size": list(cfg.data.image_size or ASSUMED_IMAGE_SIZE),
        "pad_id": 0,
        "label_names": None,
    }
    if cfg.model.family == "huggingface":  # the pretrained tokenizer's vocabulary is the model's
        facts["vocab_size"] = 0
    kwargs = model_kwargs(cfg, facts)
    custom = cfg.model.family == "custom"
    try:
        with torch.device("meta"):
            model = build_model(cfg.task, cfg.model.family, kwargs, cfg.model.class_path if custom else None,
                                cfg.model.import_path if custom else None)  # fmt: skip
    except (Exception, SystemExit) as err:
        if not custom:
            raise
        # A user's constructor that cannot run on the meta device (or at all): said, not a traceback.
        raise UserError(f"model.init_args: {cfg.model.class_path} could not be built to count its parameters: "
                        f"{error_with_place(err)}") from None  # fmt: skip
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    check_block_classes(model, _block_classes(cfg))
    blocks = [sum(p.numel() for p in block.parameters()) for block in find_blocks(model, _block_classes(cfg))]
    return total, largest, max([*blocks, total - sum(blocks)])


def _block_classes(cfg: RunConfig) -> tuple[str, ...] | None:
    return tuple(cfg.fsdp.block_class) if cfg.fsdp.block_class else None


def memory_rows(
    parameters: int,
    largest_layer: int,
    gpus_per_node: int,
    nodes: int,
    largest_unit: int,
    precision: str,
) -> list[MemoryRow]:
    """`largest_unit`: FSDP2's largest unit (a block, or the parameters left to the root)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    world = gpus_per_node * nodes
    p = parameters
    rows = [
        # 2 bytes weights + 2 gradients + 12 fp32 master weights and Adam moments, all replicated.
        MemoryRow("ddp", 16 * p, 0, "ZeRO paper (Rajbhandari et al. 2020), 16 bytes/param"),
        # ZeRO-1 partitions the 12 optimizer bytes over the data-parallel ranks.
        MemoryRow("deepspeed_stage_1", 4 * p + 12 * p // world, 0, "ZeRO paper: 4 + 12/N bytes/param"),
    ]
    for name, offload in (("deepspeed_stage_2", False), ("deepspeed_stage_2_offload", True)):
        cpu, gpu = estimate_zero2_model_states_mem_needs(p, gpus_per_node, nodes, cpu_offload=offload)
        rows.append(MemoryRow(name, gpu, cpu, "DeepSpeed estimate_zero2_model_states_mem_needs"))
    for name, offload in (("deepspeed_stage_3", False), ("deepspeed_stage_3_offload", True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            p, largest_layer, gpus_per_node, nodes, cpu_offload=offload, cpu_offload_params=offload
        )
        rows.append(MemoryRow(name, gpu, cpu, "DeepSpeed estimate_zero3_model_states_mem_needs"))
    gathered_bytes = 2 if precision.startswith("bf16") else 4
    return rows + fsdp_rows(p, largest_unit, gpus_per_node, nodes, gathered_bytes)


def fsdp_rows(
    parameters: int, largest_unit: int, gpus_per_node: int, nodes: int, gathered_bytes: int = 2
) -> list[MemoryRow]:
    """FSDP2 keeps fp32 shards of weights, gradients and Adam's moments (16/N bytes per parameter) in every
    precision; to compute, it gathers a unit's weights in the compute precision (`gathered_bytes`: 2 in bf16, 4 in
    fp32) and makes its fp32 gradient (4) before the reduce-scatter. fsdp frees a unit's gathered weights after
    its forward, fsdp_shard_grad_op keeps every unit's until the backward, fsdp_cpu_offload keeps the shards on
    the host."""
    world = gpus_per_node * nodes
    sharded = 16 * parameters // world
    gathered = (gathered_bytes + 4) * largest_unit
    kept = f"{gathered_bytes} bytes/param"
    return [
        MemoryRow("fsdp", sharded + gathered, 0, "FSDP2: 16/N bytes/param + the largest unit gathered"),
        MemoryRow("fsdp_shard_grad_op", sharded + gathered_bytes * parameters + 4 * largest_unit, 0,
                  f"FSDP2: 16/N + {kept} (weights kept gathered)"),
        MemoryRow("fsdp_cpu_offload", gathered, sharded * gpus_per_node,
                  "FSDP2: the largest unit gathered; 16/N bytes/param on the host"),
    ]  # fmt: skip


def make_plan(
    cfg: RunConfig,
    recipe: str,
    overrides: list[str],
    nodes: int,
    gpus_per_node: int,
    gpu_memory_bytes: int | None,
    head_node: str,
    port: int,
) -> Plan:
    batches = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, nodes * gpus_per_node)
    parameters, largest, largest_unit = count_parameters(cfg)
    words = " ".join(_quote(w) for w in overrides)
    # Every field is quoted for pasting into a shell; the default head node stays a variable the shell expands.
    endpoint = f'"$HEAD_NODE":{port}' if head_node == HEAD_NODE_VARIABLE else _quote(f"{head_node}:{port}")
    launcher = (
        f"torchrun --nnodes={nodes} --nproc_per_node={gpus_per_node} --rdzv_backend=c10d "
        f'--rdzv_endpoint={endpoint} --rdzv_id="$RDZV_ID"'  # new for every job: it names the job's run directory
    )
    commands = [f"{launcher} -m trainer fit {_quote(recipe)} {words}".rstrip()]
    return Plan(
        batches=batches,
        parameters=parameters,
        largest_layer=largest,
        memory=memory_rows(parameters, largest, gpus_per_node, nodes, largest_unit, cfg.trainer.precision),
        gpu_memory_bytes=gpu_memory_bytes,
        commands=commands * nodes,
    )


def render(plan: Plan, strategy: str) -> str:
    b = plan.batches
    lines = [
        f"world size        {b.world_size} processes",
        f"global batch      {b.global_batch_size} samples per optimizer step",
        f"micro batch       {b.micro_batch_size} per process, gradient accumulation {b.grad_accum_steps}",
        f"parameters        {plan.parameters:,} (largest layer {plan.largest_layer:,}; vocabulary and label "
        "counts assumed where the data decide)",
        "",
        "model-state memory per GPU (activations come on top):",
        f"  {'strategy':<27}{'GPU GiB':>10}{'CPU GiB':>10}  {'fits':<6}source",
    ]
    for row in plan.memory:
        fits = "-" if plan.gpu_memory_bytes is None else ("yes" if row.gpu_bytes <= plan.gpu_memory_bytes else "NO")
        mark = "*" if row.strategy == strategy else " "
        lines.append(
            f"{mark} {row.strategy:<27}{row.gpu_bytes / GIB:>10.3f}{row.cpu_bytes / GIB:>10.3f}  {fits:<6}{row.source}"
        )
    lines += [
        "",
        "launch, one command on each node (HEAD_NODE: the first node's address; RDZV_ID: an id new for "
        "each job, such as $(date +%Y%m%d-%H%M%S), which names its run directory runs/<recipe>/torchrun-<id>):",
    ]
    lines += [f"  node {rank}: {command}" for rank, command in enumerate(plan.commands)]
    return "\n".join(lines)


def _quote(word: str) -> str:
    return word if re.fullmatch(r"[\w.=/:,\[\]+-]+", word) else "'" + word.replace("'", "'\\''") + "'"
