"""What every data module shares: loading the splits once, and the DataLoaders built from the recipe."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import pyarrow
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from trainer.config.schema import DataConfig
from trainer.data.sources import PROCESSED, Splits, cache_dir, load_splits
from trainer.errors import UserError

MAX_CLASSES = 100_000  # distinct labels: beyond this a column is not class labels (ids, free text)


@dataclass(frozen=True)
class LabelMap:
    """The class ids of a label column, over every split together.

    A ClassLabel column, or integers that are exactly 0..N-1, keep their values (`to_id` None). Text labels,
    and integers that are not 0..N-1 (1..5, or ids such as 1000 and 2000000), map to 0..N-1 in sorted
    order; the names keep the values found, so predictions and reports say `positive` or `5`, never the id.
    """

    names: list[str]  # by class id
    to_id: dict[Any, int] | None = None  # None: the values are the ids

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def ids(self, values: list[Any]) -> list[Any]:
        return values if self.to_id is None else [self.to_id[value] for value in values]

    def tag(self) -> str:
        """Names the mapping, for the caches of what it produced."""
        if self.to_id is None:
            return "ids"
        return hashlib.sha256(json.dumps(sorted(map(str, self.to_id))).encode()).hexdigest()[:12]


def label_map(splits: Splits, column: str) -> LabelMap:
    """One mapping from the label values of all splits to class ids (see LabelMap)."""
    feature = splits.train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return LabelMap(list(feature.names))
    found: set[Any] = set()
    kinds: set[str] = set()
    for name, split in splits.present():
        if len(split) == 0:
            continue
        feature = split.features.get(column)
        kind = _label_kind(feature)
        if kind is None:
            raise UserError(f"data.label_column {column!r} of the {name} split holds {feature} values, not class "
                            "labels; give integer or text labels (or a ClassLabel column)")  # fmt: skip
        kinds.add(kind)
        values = split.unique(column)
        if any(value is None for value in values):
            raise UserError(f"data.label_column {column!r} of the {name} split has empty (null) labels; fix the data")
        found.update(values)
        if len(found) > MAX_CLASSES:
            raise UserError(f"data.label_column {column!r} holds more than {MAX_CLASSES:,} distinct values: not class "
                            "labels; check data.label_column")  # fmt: skip
    if len(kinds) > 1:
        raise UserError(f"data.label_column {column!r} holds text in one split and numbers in another; give every "
                        "split the same kind of label")  # fmt: skip
    values = sorted(found)
    if not values:
        return LabelMap([])
    names = [str(value) for value in values]
    if kinds == {"int"} and values[0] == 0 and values[-1] == len(values) - 1:
        return LabelMap(names)  # already the ids
    return LabelMap(names, {value: index for index, value in enumerate(values)})


def _label_kind(feature: Any) -> str | None:
    if isinstance(feature, datasets.Value):
        if feature.dtype.startswith(("int", "uint")):
            return "int"
        if feature.dtype in ("string", "large_string", "bool"):
            return "text"
    return None


class EvalShard(Dataset):
    """An evaluation set padded to a multiple of the world size.

    Every rank then runs the same number of batches (ZeRO-3 gathers parameters in every forward, so
    an uneven count would hang), and each real example is seen by exactly one rank. Padding rows
    repeat real ones but carry `sample_mask=False`, and the tasks leave them out of every metric:
    synced metrics equal single-process ones.
    """

    def __init__(self, dataset: datasets.Dataset, world_size: int) -> None:
        self.dataset = dataset
        self.size = -(-len(dataset) // world_size) * world_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        real = len(self.dataset)
        rows = self.dataset.__getitems__([i % real for i in indices])
        for row, index in zip(rows, indices, strict=True):
            row["sample_mask"] = torch.tensor(index < real)
        return rows


class ResumableSampler(StatefulDistributedSampler):
    """Shuffles by (seed, epoch) and shards over ranks; its position survives a change of world size.

    With the same seed the ranks together walk one global order (rank r takes every W-th index), so
    a position is a count of samples in that order: saved with the world size, it is rescaled to the
    new one on load. A run saved on 2 ranks and resumed on 1 (or the reverse) continues where it was.
    """

    def state_dict(self) -> dict[str, int]:
        return {**super().state_dict(), "world_size": self.num_replicas}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        consumed = state_dict["yielded"] * state_dict.get("world_size", self.num_replicas)
        super().load_state_dict({"yielded": consumed // self.num_replicas})


class RecipeDataModule(L.LightningDataModule):
    """Loads, processes and batches the splits of one recipe. Subclasses implement `process` and `facts`."""

    #: False where the task carves its validation set itself (language modelling carves packed blocks).
    carve_validation = True

    def __init__(self, cfg: DataConfig, seed: int, micro_batch_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.micro_batch_size = micro_batch_size
        self.cache_dir = cache_dir(cfg)
        self.train_set: datasets.Dataset | None = None
        self.val_set: datasets.Dataset | None = None
        self.test_set: datasets.Dataset | None = None

    # Lightning calls prepare_data on one process per node and setup on every process; both land here,
    # and the caches (tokenizer, tokenised data) make the second call cheap.
    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def load(self) -> None:
        if self.train_set is not None:
            return
        splits = load_splits(self.cfg, self.seed, carve_validation=self.carve_validation)
        self.train_set, self.val_set, self.test_set = self.process(splits)

    def process(self, splits: Splits) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset | None]:
        raise NotImplementedError

    #: The column of processed examples that holds class labels (None: no labels, as in language modelling).
    label_column: str | None = None
    #: What one training example is, for messages.
    example_name = "examples"

    def check_trainable(self, global_batch_size: int) -> None:
        """Something to train on and to validate with, before the run starts (not zero steps and exit 0)."""
        self.load()
        sizes = {"training": len(self.train_set), "validation": len(self.val_set)}
        if self.test_set is not None:
            sizes["test"] = len(self.test_set)
        for split, size in sizes.items():
            if size == 0:
                raise UserError(f"the {split} split holds no {self.example_name}; {self.too_small_hint()}")
        if sizes["training"] < global_batch_size:
            raise UserError(
                f"the training split holds {sizes['training']} {self.example_name}, fewer than one batch "
                f"(data.global_batch_size={global_batch_size}); lower data.global_batch_size or give more data"
            )
        if self.label_column is not None:
            classes = len(self.train_set.unique(self.label_column))
            if classes < 2:
                raise UserError(
                    f"the label column of the training split holds {classes} class; a classifier needs two or "
                    "more: check data.label_column and the data"
                )

    def too_small_hint(self) -> str:
        return "check data.path, the split names and data.max_*_samples"

    def facts(self) -> dict[str, Any]:
        """Runtime facts the model is built from (classes, channels, vocabulary size)."""
        raise NotImplementedError

    def inference_facts(self) -> dict[str, Any]:
        """What a new input must look like and what the outputs mean, beyond the config: written into the run
        directory (INPUTS_FILE) for `trainer export` and `trainer predict`, which have no data set at hand."""
        return {}

    collate_fn: Callable | None = None

    def example_batch(self, size: int = 1) -> dict[str, torch.Tensor]:
        """A batch of the first training examples: what an input looks like (for Lightning's model summary)."""
        self.load()
        rows = [self.train_set[index] for index in range(min(size, len(self.train_set)))]
        return (self.collate_fn or default_collate)(rows)

    # ------------------------------------------------------------------ loaders

    def _loader_options(self) -> dict[str, Any]:
        workers = self.cfg.num_workers
        return {
            "batch_size": self.micro_batch_size,
            "num_workers": workers,
            "pin_memory": self.cfg.pin_memory,
            "persistent_workers": self.cfg.persistent_workers and workers > 0,
            "collate_fn": self.collate_fn,
        }

    def train_dataloader(self) -> StatefulDataLoader:
        # The shuffle is a pure function of (seed, epoch), and Lightning calls set_epoch at every
        # epoch start; the sampler's position is saved in checkpoints through the StatefulDataLoader. Together they make
        # a mid-epoch resume neither repeat nor skip a sample. On several ranks the same sampler
        # shards the data without overlap.
        sampler = ResumableSampler(
            self.train_set,
            num_replicas=self._world_size(),
            rank=self._rank(),
            shuffle=True,
            seed=self.seed,
            drop_last=True,  # no rank sees an example twice in an epoch; at most world - 1 are left out
        )
        # A private generator for the loader's worker base seed: creating an iterator must not draw
        # from the global RNG, or a resumed run's dropout would drift from the uninterrupted run's.
        generator = torch.Generator().manual_seed(self.seed)
        return StatefulDataLoader(self.train_set, sampler=sampler, generator=generator, **self._loader_options())

    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: datasets.Dataset) -> DataLoader:
        shard = EvalShard(dataset, self._world_size())
        sampler = DistributedSampler(shard, num_replicas=self._world_size(), rank=self._rank(), shuffle=False)
        return DataLoader(shard, sampler=sampler, **self._loader_options())


def cached_map(
    ds: datasets.Dataset,
    fn: Callable,
    cache_dir: Path,
    tag: str,
    remove_columns: list[str],
    desc: str = "tokenising",
) -> datasets.Dataset:
    """`ds.map(fn, batched=True)` written to a cache file named by the input's fingerprint and `tag`.

    `tag` must change whenever the output would (tokenizer, lengths): a second run with the same
    data and settings then loads the file instead of tokenising again.
    """
    folder = cache_dir / PROCESSED
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = f"{ds._fingerprint}-{tag}"
    cache_file = folder / f"{fingerprint}.arrow"

    def tokenise() -> datasets.Dataset:
        return ds.map(
            fn,
            batched=True,
            remove_columns=remove_columns,
            cache_file_name=str(cache_file),
            new_fingerprint=fingerprint,
            load_from_cache_file=True,
            desc=desc,
        )

    try:
        return tokenise()
    except pyarrow.ArrowException:  # a cache file cut short (a crash, a full disk): tokenise again
        cache_file.unlink(missing_ok=True)
        return tokenise()
