"""Model-state bytes per rank under DDP, DeepSpeed ZeRO 1-3 and FSDP2, against the ZeRO paper's formulas.

Each strategy is a real 2-rank run: `torchrun --standalone` starts this file once per rank, and every rank
calls `trainer.api.fit` on a shakespeare_gpt large enough (~28M parameters by default) that the model
state dwarfs constant overheads. In the last training step (`--steps`, so Adam's moments exist under every
strategy) a callback counts, on each rank, the bytes of every distinct tensor storage that holds model
state, at the two moments it can peak: when the backward has produced every gradient (a callback queued on
autograd's engine from the loss's gradient hook: before DeepSpeed's end-of-backward reduction, which lets
ZeRO-1 drop its full gradients for its partition) and at `on_before_optimizer_step`. The larger of the two
is the measurement. Kinds:

- params: the weights the forward pass reads: the module's parameters (ZeRO-1/2: views into DeepSpeed's
  flat bit16 groups), and under ZeRO-3 each parameter's partition, `ds_tensor` (views into `lp_param_buffer`),
  plus the small parameters ZeRO-3 keeps whole (`stage3_param_persistence_threshold`).
- grads: `param.grad`, and DeepSpeed's gradient partitions (`averaged_gradients`, ZeRO-3's
  `grad_partitions_flat_buffer`).
- optimizer: Adam's exp_avg and exp_avg_sq, and under DeepSpeed the fp32 master partitions
  (`single_partition_of_fp32_groups`, `fp32_partitioned_groups_flat`).

Under FSDP2 every parameter, gradient and Adam moment is a DTensor; its local shard is what a rank holds.

The tensors are found by walking what holds them: the module's parameters, the optimizer's state, and every
attribute of DeepSpeed's ZeRO optimizer, recursively, named by the path they are reached by (the JSON
lists the paths, so each classification can be checked). A storage is counted once, whatever number of
views share it. Communication buffers are reported apart, not as model state: DeepSpeed's reduce buckets
(`ipg_buckets`, sized by `--bucket-elements`, see `DS_BUCKET_KEYS`), and DDP's gradient buckets, which live
in C++ and are computed from the parameters: none beyond the gradients since the framework sets
gradient_as_bucket_view=True (with Lightning's default, False, they were a second copy of the gradients,
4 bytes per parameter). Every other live tensor (found with
`gc.get_objects()`: the batch, metric states) is summed as `other_live_tensor_bytes`. Activations are not
counted: at both moments the backward has freed them.

Formulas, bytes per rank for Ψ parameters and N ranks, as params + grads + optimizer:
- bf16-mixed / 16-mixed (the ZeRO paper's Adam, K=12: fp32 master, m, v): ZeRO-1 2Ψ + 2Ψ + 12Ψ/N,
  ZeRO-2 2Ψ + 2Ψ/N + 12Ψ/N, ZeRO-3 (2Ψ + 2Ψ + 12Ψ)/N. DDP under Lightning's mixed precision keeps fp32
  weights (autocast casts them per op), so its 16Ψ is 4Ψ + 4Ψ + 8Ψ: the paper's total, split otherwise.
- 32 (fp32 weights and gradients, Adam's m and v, no separate master copy): DDP 4Ψ + 4Ψ + 8Ψ, ZeRO-1
  4Ψ + 4Ψ + 8Ψ/N, ZeRO-2 4Ψ + 4Ψ/N + 8Ψ/N, ZeRO-3 16Ψ/N. DeepSpeed 0.19 keeps an fp32 master partition
  even for fp32 weights (ZeRO-1/2 always clone it; ZeRO-3 means to share it, but compares a torch.device
  with a str), 4Ψ/N more than the formula: the `note` of such a result names the paths.
- FSDP2 (`fsdp`), either precision: 4Ψ/N + 4Ψ/N + 8Ψ/N = 16Ψ/N. It keeps fp32 shards of the weights,
  gradients and moments; bf16-mixed casts a block's weights to bf16 only while the block computes (its
  MixedPrecisionPolicy), so between steps there is no bf16 copy to count.
The target: measured / formula within 10% for each.

    python benchmarks/memory.py                                           # CPU, 2 ranks over gloo, bf16-mixed
    python benchmarks/memory.py --precision bf16-mixed,32 --d-model 768 --n-layers 4
    python benchmarks/memory.py --accelerator gpu --precision bf16-mixed  # needs 2 GPUs for 2 ranks

Writes benchmarks/results/<date>-memory-<cpu|gpu>.{json,md} and prints the JSON's path.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from record import machine

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
STRATEGIES = ("ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp")
KINDS = ("params", "grads", "optimizer")
TARGET = 0.10  # |measured / formula - 1|

# Bytes per parameter of each kind, as (on every rank, divided over N ranks): (a, b) is a*Ψ + b*Ψ/N.
MIXED: dict[str, dict[str, tuple[int, int]]] = {
    "ddp": {"params": (4, 0), "grads": (4, 0), "optimizer": (8, 0)},  # fp32 weights under autocast
    "deepspeed_stage_1": {"params": (2, 0), "grads": (2, 0), "optimizer": (0, 12)},
    "deepspeed_stage_2": {"params": (2, 0), "grads": (0, 2), "optimizer": (0, 12)},
    "deepspeed_stage_3": {"params": (0, 2), "grads": (0, 2), "optimizer": (0, 12)},
    "fsdp": {"params": (0, 4), "grads": (0, 4), "optimizer": (0, 8)},  # fp32 shards; bf16 only while computing
}
FP32: dict[str, dict[str, tuple[int, int]]] = {
    "ddp": {"params": (4, 0), "grads": (4, 0), "optimizer": (8, 0)},
    "deepspeed_stage_1": {"params": (4, 0), "grads": (4, 0), "optimizer": (0, 8)},
    "deepspeed_stage_2": {"params": (4, 0), "grads": (0, 4), "optimizer": (0, 8)},
    "deepspeed_stage_3": {"params": (0, 4), "grads": (0, 4), "optimizer": (0, 8)},
    "fsdp": {"params": (0, 4), "grads": (0, 4), "optimizer": (0, 8)},
}
FORMULAS = {"bf16-mixed": MIXED, "16-mixed": MIXED, "32": FP32, "32-true": FP32}
# DeepSpeed's own defaults are 5e8 elements (1 GB of bf16 per bucket); one size for all keeps them small
# next to the model state and the same for every stage.
DS_BUCKET_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size")


# ----------------------------------------------------------------------------- counting on one rank


class Census:
    """Distinct tensor storages, each counted once under the first kind and path that reached it."""

    def __init__(self) -> None:
        self.kind_of: dict[tuple[str, int], str] = {}
        self.bytes_by_path: dict[tuple[str, str], int] = {}

    def add(self, kind: str, path: str, tensor: Any) -> None:
        tensor = local(tensor)
        storage = tensor.untyped_storage()
        if tensor.device.type == "meta" or storage.nbytes() == 0:
            return
        key = (tensor.device.type, storage.data_ptr())
        if key in self.kind_of:
            return
        self.kind_of[key] = kind
        self.bytes_by_path[kind, path] = self.bytes_by_path.get((kind, path), 0) + storage.nbytes()

    def total(self, kind: str) -> int:
        return sum(size for (k, _), size in self.bytes_by_path.items() if k == kind)

    def paths(self) -> list[dict[str, Any]]:
        rows = [{"kind": kind, "path": path, "bytes": size} for (kind, path), size in self.bytes_by_path.items()]
        return sorted(rows, key=lambda row: -row["bytes"])


def local(tensor: Any) -> Any:
    """A DTensor's shard on this rank (FSDP2); any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def kind_of_path(path: str) -> str:
    """What a tensor reached through DeepSpeed's ZeRO optimizer at `path` holds (its attribute names say)."""
    lowered = path.lower()
    if "grad" in lowered:  # averaged_gradients, grads_in_partition, grad_partitions_flat_buffer, .grad
        return "grads"
    if lowered.startswith("optimizer.") or any(word in lowered for word in ("fp32", "single_partition", "master")):
        return "optimizer"  # the wrapped torch optimizer's state and its fp32 partitions
    if any(word in lowered for word in ("bit16", "fp16", "param")):
        return "params"  # ZeRO-1/2's bit16 groups; ZeRO-3's lp_param_buffer, which its ds_tensors view
    if any(word in lowered for word in ("ipg", "bucket", "buffer")):
        return "buffers"
    return "deepspeed_other"


def walk(
    obj: Any, path: str, depth: int = 0, seen: set[int] | None = None, skip: str = ""
) -> Iterator[tuple[str, Any]]:
    """(path, tensor) for every tensor under `obj`: through containers and the attributes of DeepSpeed's
    and torch's optimizer objects (not modules: their parameters are counted from the module itself), but
    not `obj`'s attribute named `skip`."""
    import torch

    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 8:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
        if not isinstance(obj, torch.nn.Parameter) and obj.grad is not None:  # fp32 partitions carry their grad
            yield f"{path}.grad", obj.grad
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            label = "tensor" if isinstance(key, torch.Tensor) else repr(key)
            yield from walk(value, f"{path}[{label}]", depth + 1, seen)
    elif isinstance(obj, list | tuple | set):
        for value in obj:
            yield from walk(value, f"{path}[]", depth + 1, seen)
    elif _walkable(obj):
        for name, value in vars(obj).items():
            if name == skip:
                continue
            yield from walk(value, f"{path}.{name}" if path else name, depth + 1, seen)


def _walkable(obj: Any) -> bool:
    import torch

    if isinstance(obj, torch.nn.Module) or not hasattr(obj, "__dict__"):
        return False
    return isinstance(obj, torch.optim.Optimizer) or type(obj).__module__.startswith("deepspeed")


def count_model_state(trainer: Any, module: Any) -> dict[str, Any]:
    """Bytes of model state on this rank, by kind, with the paths they were found under."""
    import torch

    census = Census()
    engine = getattr(trainer.strategy, "deepspeed_engine", None)
    deepspeed_tensors = []
    if engine is not None:  # its own attributes first: they name the fp32 partitions its torch optimizer steps
        zero = engine.optimizer
        deepspeed_tensors = [*walk(zero, "", skip="optimizer"), *walk(zero.optimizer, "optimizer")]
    # Buckets first: during the backward, ZeRO-2's gradients of a bucket not yet reduced are views into it.
    for path, tensor in deepspeed_tensors:
        if kind_of_path(path) == "buffers":
            census.add("buffers", path, tensor)
    params = list(module.parameters())
    for param in params:
        if hasattr(param, "ds_tensor"):  # ZeRO-3: the partition this rank keeps
            census.add("params", "param.ds_tensor", param.ds_tensor)
        census.add("params", "param.data", param.data)
        if param.grad is not None:
            census.add("grads", "param.grad", param.grad)
    for path, tensor in deepspeed_tensors:
        census.add(kind_of_path(path), path, tensor)
    if engine is None:
        for optimizer in trainer.optimizers:
            for path, tensor in walk(optimizer.state, "optimizer.state"):
                census.add("optimizer", path, tensor)
    counted = set(census.kind_of)
    other = 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
            obj = local(obj)
            storage = obj.untyped_storage()
            key = (obj.device.type, storage.data_ptr())
            if key not in counted and storage.nbytes() > 0:
                counted.add(key)
                other += storage.nbytes()
    numel = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    return {
        "parameters": numel,
        **{kind: census.total(kind) for kind in KINDS},
        "buffers": census.total("buffers") + _ddp_bucket_bytes(trainer),
        "deepspeed_other": census.total("deepspeed_other"),
        "other_live_tensor_bytes": other,
        "paths": census.paths(),
    }


def _ddp_bucket_bytes(trainer: Any) -> int:
    """DDP's gradient buckets, held by its C++ reducer (gc does not see them)."""
    from torch.nn.parallel import DistributedDataParallel

    model = trainer.strategy.model
    if not isinstance(model, DistributedDataParallel):
        return 0
    if model.gradient_as_bucket_view:
        return 0  # the gradients are views into the buckets: already counted as grads
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def rank_main(args: argparse.Namespace) -> None:
    """One rank under torchrun: train `--steps` steps and count the model state at the last one."""
    import lightning as L
    import torch

    from trainer import api

    out = Path(args.rank_out)

    class ModelStateProbe(L.Callback):
        """Counts at the two moments model state peaks: when the backward has made every gradient (before
        ZeRO-1 drops the full ones for its partition) and just before the optimizer step."""

        def __init__(self) -> None:
            self.moments: dict[str, dict[str, Any]] = {}

        def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
            if trainer.global_step != args.steps - 1:
                return

            def at_end_of_backward() -> None:
                self.moments["end_of_backward"] = count_model_state(trainer, pl_module)

            # The loss's gradient is the backward's first; a callback queued then runs once the whole graph
            # is done, before DeepSpeed's own end-of-backward reduction (queued later, or run after it returns).
            queue = torch.autograd.Variable._execution_engine.queue_callback
            loss.register_hook(lambda grad: queue(at_end_of_backward))

        def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *rest: Any) -> None:
            if trainer.global_step != args.steps - 1:
                return
            self.moments["before_optimizer_step"] = count_model_state(trainer, pl_module)
            record = {"rank": trainer.global_rank, "device_allocated_bytes": _device_allocated(trainer),
                      "moments": self.moments}  # fmt: skip
            (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=1))

    cfg = api.resolve_fit_config(args.recipe, _words(args, out))
    api.fit(cfg, callbacks=[ModelStateProbe()])


def _device_allocated(trainer: Any) -> int | None:
    import torch

    if trainer.strategy.root_device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(trainer.strategy.root_device)


def _words(args: argparse.Namespace, out: Path) -> list[str]:
    words = [
        f"data.path={args.data}", f"trainer.strategy={args.strategy}", f"trainer.accelerator={args.accelerator}",
        f"trainer.devices={args.devices}", f"trainer.precision={args.precision}", f"trainer.max_steps={args.steps}",
        f"model.d_model={args.d_model}", f"model.n_heads={args.n_heads}", f"model.n_layers={args.n_layers}",
        f"data.block_size={args.block_size}", f"data.global_batch_size={args.devices}",
        "trainer.enable_progress_bar=false", "trainer.limit_val_batches=1", "data.max_eval_samples=16",
        "model.dropout=0.0", f"run_dir={out / 'run'}",
    ]  # fmt: skip
    if args.strategy.startswith("deepspeed"):
        words.append(f"deepspeed.config={out / 'deepspeed.json'}")  # written by the parent, see measure
    return words


# ----------------------------------------------------------------------------- the comparison (parent)


def measure(strategy: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one strategy on `--devices` ranks; each rank's count, and the formula's."""
    with tempfile.TemporaryDirectory() as tmp:
        buckets = {key: args.bucket_elements for key in DS_BUCKET_KEYS}
        (Path(tmp) / "deepspeed.json").write_text(json.dumps({"zero_optimization": buckets}))
        words = ["--rank-out", tmp, "--strategy", strategy, "--precision", precision, *_shared_words(args)]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.devices}",
                   __file__, *words]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise SystemExit(f"{strategy} {precision} failed:\n{result.stderr[-4000:]}")
        ranks = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(args.devices)]
    peaks = [max(rank["moments"].items(), key=lambda item: _model_state(item[1])) for rank in ranks]
    numel = peaks[0][1]["parameters"]
    expected = {kind: _formula(FORMULAS[precision][strategy][kind], numel, args.devices) for kind in KINDS}
    fullest = max(range(len(peaks)), key=lambda r: _model_state(peaks[r][1]))  # the rank that must fit
    measured = _model_state(peaks[fullest][1])
    formula = sum(expected.values())
    row = {
        "strategy": strategy,
        "precision": precision,
        "parameters": numel,
        "measured_bytes_per_rank": measured,
        "formula_bytes_per_rank": formula,
        "ratio": round(measured / formula, 4),
        "within_target": abs(measured / formula - 1) <= TARGET,
        "fullest_rank": ranks[fullest]["rank"],
        "peak_moment": peaks[fullest][0],
        "formula_bytes_by_kind": expected,
        "ranks": [_without_paths(rank) for rank in ranks],
        "paths_at_peak": peaks[fullest][1]["paths"],  # the fullest rank's
    }
    note = _note(peaks[fullest][1], expected)
    if note:
        row["note"] = note
    return row


def _without_paths(rank: dict[str, Any]) -> dict[str, Any]:
    moments = {name: {k: v for k, v in counted.items() if k != "paths"} for name, counted in rank["moments"].items()}
    return {"rank": rank["rank"], "device_allocated_bytes": rank["device_allocated_bytes"], **moments}


def _model_state(counted: dict[str, Any]) -> int:
    return sum(counted[kind] for kind in KINDS)


def _formula(coefficients: tuple[int, int], numel: int, ranks: int) -> int:
    every_rank, divided = coefficients
    return round(every_rank * numel + divided * numel / ranks)


def _note(rank: dict[str, Any], expected: dict[str, int]) -> str:
    """Where a kind is off its formula by more than the target, which paths hold it."""
    notes = []
    for kind in KINDS:
        if abs(rank[kind] / expected[kind] - 1) > TARGET:
            held = ", ".join(f"{p['path']} {p['bytes']:,}" for p in rank["paths"] if p["kind"] == kind)
            notes.append(f"{kind}: {rank[kind]:,} bytes vs {expected[kind]:,} ({held})")
    return "; ".join(notes)


def _shared_words(args: argparse.Namespace) -> list[str]:
    return ["--recipe", args.recipe, "--data", str(args.data), "--accelerator", args.accelerator,
            "--devices", str(args.devices), "--steps", str(args.steps), "--d-model", str(args.d_model),
            "--n-heads", str(args.n_heads), "--n-layers", str(args.n_layers), "--block-size", str(args.block_size),
            "--bucket-elements", str(args.bucket_elements)]  # fmt: skip


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _buffers(row: dict[str, Any]) -> int:
    """The largest communication buffers any rank held at either moment."""
    return max(counted["buffers"] for rank in row["ranks"] for counted in rank.values() if isinstance(counted, dict))


def write_results(record: dict[str, Any], folder: Path) -> Path:
    slug = "gpu" if record["accelerator"] == "gpu" else "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{record['date']}-memory-{slug}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    header = ("| date | device | strategy | precision | measured bytes/rank | formula bytes/rank | ratio | "
              "buffers apart |")  # fmt: skip
    rows = [f"| {record['date']} | {record['device']} | {r['strategy']} | {r['precision']} | "
            f"{r['measured_bytes_per_rank']:,} ({_mib(r['measured_bytes_per_rank'])}) | "
            f"{r['formula_bytes_per_rank']:,} ({_mib(r['formula_bytes_per_rank'])}) | {r['ratio']} | "
            f"{_mib(_buffers(r))} |" for r in record["results"]]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join([header, "| --- " * 8 + "|", *rows]) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="bf16-mixed", help=f"comma-separated, of {', '.join(FORMULAS)}")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--devices", type=int, default=2, help="ranks (N in the formulas)")
    parser.add_argument("--recipe", default="shakespeare_gpt")
    parser.add_argument("--data", type=Path, default=DATA / "tiny_shakespeare")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-heads", type=int, default=12)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="counted at the last one (Adam's state exists by then)")
    parser.add_argument("--bucket-elements", type=int, default=10_000_000, help="DeepSpeed's bucket sizes")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result files")
    parser.add_argument("--rank-out", help=argparse.SUPPRESS)  # set: this process is one rank under torchrun
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_out:
        rank_main(args)
        return
    precisions = args.precision.split(",")
    strategies = args.strategies.split(",")
    for name, given, known in (("precision", precisions, FORMULAS), ("strategy", strategies, STRATEGIES)):
        unknown = [value for value in given if value not in known]
        if unknown:
            parser.error(f"unknown {name} {unknown[0]!r}; choose from {', '.join(known)}")
    if args.steps < 2:
        parser.error("--steps must be 2 or more: torch's Adam makes its state at the first step")

    results = []
    for precision in precisions:
        for strategy in strategies:
            row = measure(strategy, precision, args)
            results.append(row)
            print(f"{precision} {strategy}: {_mib(row['measured_bytes_per_rank'])} per rank vs formula "
                  f"{_mib(row['formula_bytes_per_rank'])} ({row['ratio']})", file=sys.stderr, flush=True)  # fmt: skip
    record = {
        "date": datetime.date.today().isoformat(),
        **machine(args.accelerator),
        "accelerator": args.accelerator,
        "recipe": args.recipe,
        "ranks": args.devices,
        "model": {key: getattr(args, key) for key in ("d_model", "n_heads", "n_layers", "block_size")},
        "steps": args.steps,
        "deepspeed_bucket_elements": args.bucket_elements,
        "target": f"measured / formula within {TARGET:.0%}",
        "results": results,
    }
    print(write_results(record, args.out))


if __name__ == "__main__":
    main()
