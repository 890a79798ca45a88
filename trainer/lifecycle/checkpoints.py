"""Reading and verifying training checkpoints, whatever wrote them.

A checkpoint is a Lightning file (auto, DDP), a DeepSpeed directory (ZeRO shards) or an FSDP2 directory
(torch.distributed.checkpoint shards and Lightning's `meta.pt`). All load with `weights_only=True`;
DeepSpeed's own `zero_to_fp32`, and torch.distributed.checkpoint's reader for FSDP2, consolidate the shards.

Every checkpoint gets a SHA-256 record when it is written: `<file>.sha256` beside a file, or
`checksums.sha256` inside a checkpoint directory (one line per file, `sha256sum` format). Resume, test,
generate and export verify it first, so bytes that rotted on disk are reported as a corrupt checkpoint
instead of loading and training on garbage. A checkpoint without a record (written by an older
version) is read unverified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.distributed.deepspeed_config import ZeroSettings
from trainer.errors import UserError
from trainer.files import refuse_special
from trainer.lifecycle.run_dir import CHECKPOINTS, LAST_CKPT, checkpoint_step
from trainer.lifecycle.universal import LATEST, is_deepspeed_checkpoint, saved_zero
from trainer.tasks.base import TASK_KEY

MODEL_PREFIX = "model."  # the plain model's attribute name in every task module
DIRECTORY_RECORD = "checksums.sha256"
_CHUNK = 16 * 1024 * 1024


@dataclass
class TrainingCheckpoint:
    hparams: dict[str, Any]  # the task's constructor arguments (family, model_kwargs, ...)
    state_dict: dict[str, torch.Tensor]  # the task module's full-precision weights
    global_step: int


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint was trained as, read without its tensors."""

    task: str | None  # None: written before the task was recorded
    hparams: dict[str, Any]
    global_step: int
    zero: ZeroSettings | None = None  # a DeepSpeed checkpoint's ZeRO settings; None for a plain one
    lr_fraction: float | None = None  # the learning rate reached, as a fraction of optim.lr; None: no schedule
    fsdp: bool = False  # an FSDP2 checkpoint (DCP shards)


class CorruptCheckpoint(UserError):
    """A checkpoint's bytes no longer match the checksum recorded when it was written."""


# ----------------------------------------------------------------------------- checksums


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint file; of a DeepSpeed checkpoint folder, sha256 over its files' names and digests."""
    if path.is_file():
        return file_digest(path)
    members = [m for m in sorted(path.rglob("*")) if m.is_file() and m.name != DIRECTORY_RECORD]
    listing = "".join(f"{file_digest(member)}  {member.relative_to(path)}\n" for member in members)
    return hashlib.sha256(listing.encode()).hexdigest()


def verified_digest(path: Path) -> str:
    """`verify_checkpoint` and `checkpoint_digest` together: a checkpoint file is read and hashed once, not
    twice (an export's manifest records the digest of what it verified)."""
    refuse_special(path, "checkpoint")
    if path.is_file():
        digest = file_digest(path)
        recorded = recorded_file_digests(path)
        if recorded and digest not in recorded:
            verify_checkpoint(path)  # raises, naming the newest good checkpoint
        return digest
    verify_checkpoint(path)
    return checkpoint_digest(path)


def _record_of(path: Path) -> Path:
    return path / DIRECTORY_RECORD if path.is_dir() else path.with_name(path.name + ".sha256")


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def record_directory(path: Path) -> None:
    """Write the checksum record of a complete DeepSpeed checkpoint directory (it travels with the directory)."""
    lines = [
        f"{file_digest(file)}  {file.relative_to(path).as_posix()}"
        for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != DIRECTORY_RECORD)
    ]
    _write_atomically(path / DIRECTORY_RECORD, "\n".join(lines) + "\n")


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _record_lines(record: Path) -> list[tuple[str, str]]:
    """(digest, name) pairs of a record; a record that is not one (rotted too) raises CorruptCheckpoint."""
    pairs = []
    for line in record.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if not _DIGEST.fullmatch(digest) or not name:
            raise CorruptCheckpoint(f"corrupt checksum record {str(record)!r}: a checkpoint's record no longer reads "
                                    "as one, so the checkpoint cannot be verified; give another ckpt")  # fmt: skip
        pairs.append((digest, name))
    return pairs


def recorded_file_digests(path: Path) -> list[str]:
    record = _record_of(path)
    if not record.is_file():
        return []
    return [digest for digest, _ in _record_lines(record)]


def record_file(path: Path, digest: str, also: list[str] | None = None) -> None:
    """`path.sha256`: the digest of `path`, and, while a swap is in flight, the one it replaces (`also`).

    A file checkpoint is swapped in with one rename; its record cannot move in the same instant, so the
    record names both contents until the rename is done (see LastCheckpoint)."""
    lines = [f"{d}  {path.name}" for d in [digest, *(also or [])]]
    _write_atomically(_record_of(path), "\n".join(lines) + "\n")


def remove_record(path: Path) -> None:
    _record_of(path).unlink(missing_ok=True)


def verify_checkpoint(path: Path) -> None:
    """Raise CorruptCheckpoint if `path` does not match its record; do nothing if it has none."""
    refuse_special(path, "checkpoint")
    problem = _mismatch(path)
    if problem is None:
        return
    good = newest_good_checkpoint(path)
    hint = f"the newest good checkpoint is {str(good)!r}" if good else "no other checkpoint of the run is intact"
    raise CorruptCheckpoint(f"corrupt checkpoint {str(path)!r}: {problem}, so it cannot be loaded safely; {hint}")


def _mismatch(path: Path) -> str | None:
    if path.is_dir():
        record = path / DIRECTORY_RECORD
        if not record.is_file():
            return None
        for digest, name in _record_lines(record):
            member = path / name
            if not member.is_file():
                return f"{name} is missing"
            if file_digest(member) != digest:
                return f"{name} no longer matches the checksum recorded when it was written"
        return None
    digests = recorded_file_digests(path)
    if digests and file_digest(path) not in digests:
        return "its bytes no longer match the checksum recorded when it was written"
    return None


def newest_good_checkpoint(bad: Path) -> Path | None:
    """Another checkpoint of the same run that verifies, the newest first (last.ckpt, then the best-k by step)."""
    folder = bad.parent
    if folder.name != CHECKPOINTS:
        return None
    candidates = [folder / LAST_CKPT, folder / (LAST_CKPT + ".previous")]
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != LAST_CKPT), key=checkpoint_step, reverse=True)
    for candidate in [*candidates, *others]:
        if candidate.exists() and candidate.resolve() != bad.resolve():
            with contextlib.suppress(CorruptCheckpoint):
                if _mismatch(candidate) is None:
                    return candidate
    return None


# ----------------------------------------------------------------------------- reading


def read_training_checkpoint(path: Path) -> TrainingCheckpoint:
    """A Lightning checkpoint file or a DeepSpeed checkpoint directory, verified and consolidated."""
    verify_checkpoint(path)
    if is_fsdp_checkpoint(path):
        return _read_fsdp(path)
    if path.is_dir():
        return _read_deepspeed(path)
    checkpoint = _lightning_checkpoint(path)
    return TrainingCheckpoint(
        checkpoint["hyper_parameters"], checkpoint["state_dict"], checkpoint.get("global_step", 0)
    )


def read_info(path: Path) -> CheckpointInfo:
    """The task and constructor arguments a checkpoint was written with, without reading its tensors."""
    fsdp = is_fsdp_checkpoint(path)
    if fsdp:
        state = fsdp_metadata(path)
    else:
        state = _deepspeed_client_state(path) if path.is_dir() else _lightning_checkpoint(path, mmap=True)
    zero = saved_zero(state.get("ds_config") or {}) if path.is_dir() and not fsdp else None
    step = state.get("global_step", 0)
    return CheckpointInfo(state.get(TASK_KEY), state["hyper_parameters"], step, zero, _lr_fraction(state), fsdp=fsdp)


def _lr_fraction(state: dict[str, Any]) -> float | None:
    """The highest of the param groups' learning rates the schedule had reached, over their base rates."""
    schedulers = state.get("lr_schedulers") or []
    saved = schedulers[0] if schedulers and isinstance(schedulers[0], dict) else {}
    last, base = saved.get("_last_lr"), saved.get("base_lrs")
    if not (isinstance(last, list) and isinstance(base, list) and last and len(last) == len(base)):
        return None
    try:
        return max(float(now) / float(start) if start else 0.0 for now, start in zip(last, base, strict=True))
    except (TypeError, ValueError):
        return None


def check_resumable(path: Path) -> None:
    """A checkpoint to resume from is intact and loads: a clear error now, before any work.

    The checksum is verified (a full read, which also warms the page cache for Lightning's own read);
    without a record, a file is opened memory-mapped, and a truncated one still fails, since its zip
    directory sits at the end. A DeepSpeed directory must hold DeepSpeed's `latest` marker.
    """
    verify_checkpoint(path)
    if is_fsdp_checkpoint(path):
        fsdp_metadata(path)
        return
    if path.is_dir():
        if not is_deepspeed_checkpoint(path):
            raise UserError(f"checkpoint {str(path)!r} is an incomplete DeepSpeed checkpoint; resume from another run")
        return
    _lightning_checkpoint(path, mmap=True)


def _lightning_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    checkpoint = _torch_load(path, mmap)
    _check_written_by_fit(checkpoint, path, weights=True)
    return checkpoint


def _check_written_by_fit(state: Any, path: Path, weights: bool) -> None:
    """The shape every checkpoint of `trainer fit` has; anything else is refused before it is used."""
    hparams = state.get("hyper_parameters") if isinstance(state, dict) else None
    fits = (
        isinstance(hparams, dict)
        and isinstance(hparams.get("family"), str)
        and isinstance(hparams.get("model_kwargs"), dict)
        and (not weights or isinstance(state.get("state_dict"), dict))
    )
    if not fits:
        raise UserError(f"checkpoint {str(path)!r} was not written by `trainer fit`; give another ckpt")


def _torch_load(path: Path, mmap: bool = False) -> Any:
    refuse_special(path, "checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types (EOFError, RuntimeError, UnpicklingError, ...)
        raise UserError(
            f"checkpoint {str(path)!r} cannot be loaded ({type(err).__name__}); it is truncated, corrupt "
            "or not a trainer checkpoint: give another ckpt"
        ) from None


# ----------------------------------------------------------------------------- FSDP2 (DCP) folders

FSDP_METADATA = "meta.pt"  # Lightning's ModelParallelStrategy: everything but the model and optimizer shards
DCP_INDEX = ".metadata"  # torch.distributed.checkpoint's index of the shards


def _dcp_failure() -> type[BaseException]:
    # torch.distributed.checkpoint raises CheckpointException, a BaseException (torch 2.13): `except Exception`
    # misses it.
    from torch.distributed.checkpoint.api import CheckpointException

    return CheckpointException


DCP_FAILURE = _dcp_failure()


def is_fsdp_checkpoint(path: Path) -> bool:
    """A folder that is, or was meant to be, FSDP2's (an incomplete one too: checked by fsdp_metadata)."""
    return path.is_dir() and ((path / FSDP_METADATA).is_file() or (path / DCP_INDEX).is_file())


def fsdp_metadata(path: Path) -> dict[str, Any]:
    """Lightning's part of an FSDP2 checkpoint (hyperparameters, loops, callbacks), once the folder is whole: its
    index reads and every shard file it names holds the bytes it names. A folder cut short (a crash, a copy
    interrupted) is one line here, whether or not a checksum record says so."""
    _check_fsdp_folder(path)
    state = _torch_load(path / FSDP_METADATA)
    _check_written_by_fit(state, path, weights=False)
    return state


class UnsafeIndex(Exception):  # noqa: N818 - what the index names, not an error of ours
    pass


class _DCPIndexUnpickler(pickle.Unpickler):
    """torch.distributed.checkpoint reads `.metadata` with plain `pickle.load` (torch 2.13), which runs whatever
    a doctored file names. Read here first, it may name only what an index is made of: DCP's metadata classes,
    torch's sizes, dtypes, layouts and memory formats, and a path."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            module in ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
            or (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), _TORCH_VALUES)))
            or (module, name) in {("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                                  ("collections", "OrderedDict")}
        )  # fmt: skip
        if not allowed:
            raise UnsafeIndex(f"{module}.{name}")
        return super().find_class(module, name)


_TORCH_VALUES = (torch.dtype, torch.layout, torch.memory_format)


def _safe_dcp_index(index: Path) -> Any:
    with open(index, "rb") as file:
        return _DCPIndexUnpickler(file).load()


def _check_fsdp_folder(path: Path) -> None:
    incomplete = f"FSDP checkpoint {str(path)!r} is incomplete"
    for name in (FSDP_METADATA, DCP_INDEX):
        refuse_special(path / name, "checkpoint")
        if not (path / name).is_file():
            raise UserError(f"{incomplete}: it has no {name}; resume from another checkpoint or run")
    try:
        storage = _safe_dcp_index(path / DCP_INDEX).storage_data
    except UnsafeIndex as err:
        raise UserError(f"FSDP checkpoint {str(path)!r} is not safe to load: its {DCP_INDEX} names {err}, which no "
                        "checkpoint index holds; give a checkpoint written by `trainer fit`") from None  # fmt: skip
    except (Exception, DCP_FAILURE) as err:  # pickle, zip and EOF errors of a damaged index
        raise UserError(f"{incomplete} or corrupt: its {DCP_INDEX} cannot be read ({type(err).__name__}); resume "
                        "from another checkpoint or run") from None  # fmt: skip
    needed: dict[str, int] = {}
    for info in storage.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        shard = path / name
        if not shard.is_file() or shard.is_symlink():
            raise UserError(f"{incomplete}: shard {name} is missing; resume from another checkpoint or run")
        if shard.stat().st_size < size:
            raise UserError(f"{incomplete}: shard {name} is cut short; resume from another checkpoint or run")


def _read_fsdp(path: Path) -> TrainingCheckpoint:
    """The model's weights, gathered from every rank's shard into plain tensors in this process alone (no
    process group; the optimizer's shards are not read)."""
    metadata = fsdp_metadata(path)
    state = read_dcp(path, keys={"state_dict"})
    return TrainingCheckpoint(metadata["hyper_parameters"], state["state_dict"], metadata.get("global_step", 0))


def read_dcp(path: Path, keys: set[str] | None = None) -> dict[str, Any]:
    """A torch.distributed.checkpoint folder (its `keys`, or all of it) as plain tensors, in this process alone:
    torch's own reader and planner, as its `dcp_to_torch_save` uses them (private in torch 2.13; tests/test_fsdp.py
    exports and resumes through it)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    try:
        _load_state_dict(state, storage_reader=FileSystemReader(path), planner=_EmptyStateDictLoadPlanner(keys=keys),
                         no_dist=True)  # fmt: skip
    except (Exception, DCP_FAILURE) as err:
        raise UserError(f"FSDP checkpoint {str(path)!r} cannot be read ({type(err).__name__}); it is corrupt: give "
                        "another checkpoint") from None  # fmt: skip
    return state


def _deepspeed_client_state(path: Path) -> dict[str, Any]:
    """Lightning's part of a DeepSpeed checkpoint (hyperparameters, loops, callbacks): rank 0's model states."""
    if not is_deepspeed_checkpoint(path):
        raise UserError(
            f"checkpoint {str(path)!r} is a folder but neither a DeepSpeed nor an FSDP checkpoint; give another ckpt"
        )
    tag = (path / LATEST).read_text().strip()
    states = sorted((path / tag).glob("*mp_rank_00_model_states.pt"))
    if not states:
        raise UserError(f"DeepSpeed checkpoint {str(path)!r} has no model states; it is incomplete")
    state = _torch_load(states[0])
    _check_written_by_fit(state, path, weights=False)
    return state


def _read_deepspeed(path: Path) -> TrainingCheckpoint:
    client_state = _deepspeed_client_state(path)
    tag = (path / LATEST).read_text().strip()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        state_dict = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise UserError(f"DeepSpeed checkpoint {str(path)!r} cannot be consolidated: {err}") from None
    return TrainingCheckpoint(client_state["hyper_parameters"], state_dict, client_state.get("global_step", 0))


def plain_model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(MODEL_PREFIX): v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}
