"""Raw splits from Hugging Face `datasets`: a hub name, a local file or folder in the hub's layout,
or the digits set that scikit-learn ships (the offline quickstart)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow
import pyarrow.parquet

from trainer.config.schema import DataConfig
from trainer.errors import UserError
from trainer.files import refuse_special, refuse_special_inside
from trainer.writable import check_writable

SKLEARN_DIGITS = "sklearn:digits"
_FILE_BUILDERS = {".txt": "text", ".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


TOKENIZERS, PROCESSED = "tokenizers", "processed"  # the cache's two folders


def cache_dir(cfg: DataConfig) -> Path:
    """Tokenizers and tokenised data: data.cache_dir, else $TRAINER_CACHE, else ~/.cache/trainer."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("TRAINER_CACHE", Path.home() / ".cache" / "trainer"))


@dataclass
class Splits:
    train: datasets.Dataset
    val: datasets.Dataset | None  # None only when the caller carves validation itself
    test: datasets.Dataset | None

    def present(self) -> list[tuple[str, datasets.Dataset]]:
        return [(name, split) for name, split in (("training", self.train), ("validation", self.val),
                                                  ("test", self.test)) if split is not None]  # fmt: skip


def check_source(cfg: DataConfig) -> None:
    """Fail fast, before any work, on a cache that cannot be written, a local path that does not exist or
    files that hold nothing."""
    cache = cache_dir(cfg)
    for folder in (cache, cache / TOKENIZERS, cache / PROCESSED):
        check_writable(folder, "data.cache_dir" if cfg.cache_dir else "TRAINER_CACHE")
    if cfg.path is None:
        return
    path = Path(cfg.path).expanduser()
    refuse_special(path, "data.path")
    if not path.exists():
        of = f" of {cfg.name!r}" if cfg.name else ""
        where = "" if path.is_absolute() else f" (a relative path is read from the working directory, {Path.cwd()})"
        raise UserError(f"data.path {cfg.path!r} does not exist{where}; point data.path at a local copy{of}")
    if path.is_dir():
        refuse_special_inside(path, "data file")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _FILE_BUILDERS)
    for file in files:
        if file.stat().st_size == 0:
            raise UserError(f"data file {str(file)!r} is empty; give data.path a file or folder that holds data")
        if file.suffix == ".parquet":
            try:
                rows = pyarrow.parquet.ParquetFile(file).metadata.num_rows
            except pyarrow.ArrowException:
                raise UserError(f"data file {str(file)!r} is not a parquet file; check what it is") from None
            if rows == 0:
                raise UserError(f"data file {str(file)!r} holds no rows; give data.path data to train on")


def load_splits(cfg: DataConfig, seed: int, carve_validation: bool = True) -> Splits:
    """Train, validation and (when the data set has one) test splits, subsampled as the recipe asks.

    Without a validation split, a seeded `val_fraction` of train is held out, unless
    `carve_validation` is False (the caller holds out processed examples itself).
    """
    with _quiet_datasets():  # reading, slicing and shuffling in-house; the tokenising that follows shows progress
        return _load_splits(cfg, seed, carve_validation)


def _load_splits(cfg: DataConfig, seed: int, carve_validation: bool) -> Splits:
    check_source(cfg)
    if cfg.path is None and cfg.name == SKLEARN_DIGITS:
        available = _sklearn_digits()
        names = list(available)

        def load(split: str) -> datasets.Dataset:
            return _slice(available, split)

    else:
        names, load = _hub_or_local(cfg)

    if _base(cfg.train_split) not in names:
        raise UserError(f"data set has no split {cfg.train_split!r} (it has {names}); set data.train_split")
    train = load(cfg.train_split)
    val_name = cfg.val_split or ("validation" if "validation" in names else None)
    if val_name is not None:
        if _base(val_name) not in names:
            raise UserError(f"data set has no split {val_name!r} (it has {names}); set data.val_split")
        val = load(val_name)
    elif not carve_validation:
        val = None
    else:
        train, val = hold_out(train, cfg.val_fraction or 0.1, seed)
    test = load(cfg.test_split) if cfg.test_split and _base(cfg.test_split) in names else None

    return Splits(
        train=_subsample(train, cfg.max_train_samples, seed),
        val=_subsample(val, cfg.max_eval_samples, seed) if val is not None else None,
        test=_subsample(test, cfg.max_eval_samples, seed) if test is not None else None,
    )


def hold_out(train: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A seeded fraction of train as the validation split (at least one example on each side)."""
    if len(train) < 2:
        raise UserError(
            f"the training split holds {len(train)} example(s): too few to hold out a validation split; "
            "give more data or a validation split (data.val_split)"
        )
    held_out = train.train_test_split(test_size=fraction, seed=seed)
    return held_out["train"], held_out["test"]


def _slice(splits: datasets.DatasetDict, spec: str) -> datasets.Dataset:
    """`train[:10%]`-style slicing, as `load_dataset(split=...)` does it, for data built in memory."""
    sizes = {name: len(ds) for name, ds in splits.items()}
    (instruction,) = datasets.ReadInstruction.from_spec(spec).to_absolute(sizes)
    return splits[instruction.splitname].select(range(instruction.from_, instruction.to))


def _base(split: str) -> str:
    """'train[:512]' -> 'train': datasets' slicing syntax is allowed in split names."""
    return split.split("[", 1)[0]


def _hub_or_local(cfg: DataConfig):
    source = str(Path(cfg.path).expanduser()) if cfg.path else cfg.name
    kwargs: dict = {}
    if cfg.path and Path(source).is_file():
        builder = _FILE_BUILDERS.get(Path(source).suffix)
        if builder is None:
            raise UserError(f"data.path {cfg.path!r}: unknown file type; use {sorted(_FILE_BUILDERS)} or a folder")
        kwargs = {"data_files": {"train": source}}
        source = builder
    if source == "text" or (cfg.path and Path(source).is_dir() and _only_text_files(Path(source))):
        # Keep newlines: a language model must learn where lines end.
        kwargs["keep_linebreaks"] = True
    where = "data.path" if cfg.path else "data.name"
    try:
        names = list(datasets.load_dataset(source, **kwargs).keys())
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
        raise UserError(
            f"cannot load data set {source!r} ({type(err).__name__}); check {where}, "
            "or set data.path to a local folder in the hub's layout"
        ) from None
    except _UNREADABLE as err:
        raise UserError(f"cannot read the data at {where}={cfg.path or cfg.name!r}: {_cause(err)}") from None

    def load(split: str) -> datasets.Dataset:
        try:
            return datasets.load_dataset(source, split=split, **kwargs)
        except _UNREADABLE as err:
            raise UserError(f"cannot read split {split!r} of {where}={cfg.path or cfg.name!r}: {_cause(err)}") from None

    return names, load


# A file of the wrong kind or broken contents: datasets wraps its builder's error, pyarrow raises its own.
_UNREADABLE = (datasets.exceptions.DatasetGenerationError, pyarrow.ArrowException, UnicodeDecodeError, ValueError)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No log line or progress bar of datasets' own while it reads: an error is then one line of ours."""
    level, bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _cause(err: BaseException) -> str:
    """The innermost error's first line: datasets' own message only says that generating failed."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()
    return f"{text[0] if text else type(err).__name__}; check that the files are what their names say"


def _only_text_files(folder: Path) -> bool:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return bool(files) and all(p.suffix == ".txt" or p.suffix == ".md" for p in files)


def _subsample(ds: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    # A seeded random subset, never a head slice: IMDB's splits are sorted by label.
    if limit is None or limit >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(limit))


def _sklearn_digits() -> datasets.DatasetDict:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package): a fixed, stratified 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to the 0..255 of ordinary 8-bit images.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    features = datasets.Features(
        {"image": datasets.Array2D((8, 8), "uint8"), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    full = datasets.Dataset.from_dict({"image": images, "label": digits.target}, features=features)
    split = full.train_test_split(test_size=0.2, seed=0, stratify_by_column="label")
    return datasets.DatasetDict(train=split["train"], test=split["test"])
