"""Raw splits from Hugging Face `datasets`: a hub name, a local file or folder in the hub's layout,
or the digits set that scikit-learn ships (the offline quickstart)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from trainer.config.schema import DataConfig
from trainer.errors import UserError

SKLEARN_DIGITS = "sklearn:digits"
_FILE_BUILDERS = {".txt": "text", ".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class Splits:
    train: datasets.Dataset
    val: datasets.Dataset | None  # None only when the caller carves validation itself
    test: datasets.Dataset | None


def check_source(cfg: DataConfig) -> None:
    """Fail fast, before any work, on a local path that does not exist."""
    if cfg.path is not None and not Path(cfg.path).expanduser().exists():
        raise UserError(f"data.path {cfg.path!r} does not exist; point data.path at a local copy of {cfg.name!r}")


def load_splits(cfg: DataConfig, seed: int, carve_validation: bool = True) -> Splits:
    """Train, validation and (when the data set has one) test splits, subsampled as the recipe asks.

    Without a validation split, a seeded `val_fraction` of train is held out, unless
    `carve_validation` is False (the caller holds out processed examples itself).
    """
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
        held_out = train.train_test_split(test_size=cfg.val_fraction or 0.1, seed=seed)
        train, val = held_out["train"], held_out["test"]
    test = load(cfg.test_split) if cfg.test_split and _base(cfg.test_split) in names else None

    return Splits(
        train=_subsample(train, cfg.max_train_samples, seed),
        val=_subsample(val, cfg.max_eval_samples, seed) if val is not None else None,
        test=_subsample(test, cfg.max_eval_samples, seed) if test is not None else None,
    )


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
    try:
        names = list(datasets.load_dataset(source, **kwargs).keys())
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
        where = "data.path" if cfg.path else "data.name"
        raise UserError(
            f"cannot load data set {source!r} ({type(err).__name__}); check {where}, "
            "or set data.path to a local folder in the hub's layout"
        ) from None

    def load(split: str) -> datasets.Dataset:
        return datasets.load_dataset(source, split=split, **kwargs)

    return names, load


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
