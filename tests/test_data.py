"""Data: splits, tokenizers, packing, and the tokenised cache that a second run reuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.config import load_config
from trainer.data import DATA_MODULES
from trainer.data.sources import load_splits
from trainer.errors import UserError


def _datamodule(recipe: str, *overrides: str):
    cfg = load_config(recipe, list(overrides))
    module = DATA_MODULES[cfg.task](cfg.data, seed=cfg.seed, micro_batch_size=8)
    module.load()
    return module


def test_without_a_validation_split_a_seeded_fraction_of_train_is_held_out(shared_data: Path) -> None:
    cfg = load_config("mnist_cnn", [f"data.path={shared_data / 'mnist'}", "data.train_split=train[:1000]"]).data
    first, again, other_seed = load_splits(cfg, 1), load_splits(cfg, 1), load_splits(cfg, 2)
    assert len(first.val) == 50 and len(first.train) == 950 and len(first.test) == 10_000
    assert first.val["label"] == again.val["label"]
    assert first.val["label"] != other_seed.val["label"]


def test_max_samples_take_a_random_subset_not_the_head(small_imdb: Path) -> None:
    # IMDB's files are sorted by label; a head slice would hold one class only.
    cfg = load_config("imdb_lstm", [f"data.path={small_imdb}", "data.max_eval_samples=40"]).data
    splits = load_splits(cfg, 0)
    assert len(splits.test) == 40 and set(splits.test["label"]) == {0, 1}


def test_a_hub_name_without_network_says_to_use_data_path() -> None:
    cfg = load_config("mnist_cnn", ["data.name=nobody/no_such_dataset_xyz"]).data
    with pytest.raises(UserError, match="set data.path"):
        load_splits(cfg, 0)


def test_image_batches_are_normalised_tensors(shared_data: Path) -> None:
    module = _datamodule(
        "mnist_cnn", f"data.path={shared_data / 'mnist'}", "data.train_split=train[:200]", "data.test_split=test[:50]"
    )
    batch = next(iter(module.val_dataloader()))
    assert batch["pixels"].shape == (8, 1, 28, 28) and batch["pixels"].dtype == torch.float32
    assert module.facts() == {"num_classes": 10, "in_channels": 1, "image_size": [28, 28],
                              "label_names": [str(digit) for digit in range(10)]}  # fmt: skip


@pytest.mark.parametrize("recipe", ["digits_cnn", "mnist_cnn"])
def test_images_decoded_into_memory_give_the_same_batches(recipe: str, shared_data: Path) -> None:
    words = [f"data.path={shared_data / 'mnist'}", "data.train_split=train[:300]", "data.test_split=test[:40]"]
    words = words if recipe == "mnist_cnn" else []
    in_memory, per_batch = _datamodule(recipe, *words, "data.in_memory=true"), _datamodule(recipe, *words)
    assert type(in_memory.train_set).__name__ == "DecodedImages"  # the default for sets this small
    assert type(_datamodule(recipe, *words, "data.in_memory=false").train_set).__name__ == "Dataset"
    for split in ("train_set", "val_set", "test_set"):
        ours, theirs = getattr(in_memory, split), getattr(_datamodule(recipe, *words, "data.in_memory=false"), split)
        assert len(ours) == len(theirs)
        rows = [3, 0, len(ours) - 1]
        for a, b in zip(ours.__getitems__(rows), theirs.__getitems__(rows), strict=True):
            assert torch.equal(a["pixels"], b["pixels"]) and int(a["labels"]) == int(b["labels"])
    assert in_memory.facts() == per_batch.facts()


def test_images_of_several_sizes_are_one_line_or_resized_by_the_setting(tmp_path: Path) -> None:
    from PIL import Image

    for split, count in (("train", 40), ("test", 10)):
        for i in range(count):
            folder = tmp_path / "images" / split / str(i % 2)
            folder.mkdir(parents=True, exist_ok=True)
            mode = "RGB" if i % 5 == 0 else "L"
            Image.new(mode, (8 + i % 3, 8), color=i * 5 if mode == "L" else (i, 0, 0)).save(folder / f"{i}.png")
    words = [f"data.path={tmp_path / 'images'}", "data.normalize_mean=0.5"]
    for in_memory in ("true", "false"):
        with pytest.raises(UserError, match=r"the images differ in size or channels \(8x8, 8x8x3, 8x9, .*set "
                                            r"data.image_size=\[height, width\]"):  # fmt: skip
            _datamodule("mnist_cnn", *words, f"data.in_memory={in_memory}")
    batches = []
    for in_memory in ("true", "false"):  # resized and converted alike on both paths
        module = _datamodule("mnist_cnn", *words, "data.image_size=[6,7]", "data.image_channels=1",
                             f"data.in_memory={in_memory}")  # fmt: skip
        assert module.facts()["image_size"] == [6, 7] and module.facts()["in_channels"] == 1
        batches.append(next(iter(module.val_dataloader())))
    assert batches[0]["pixels"].shape[1:] == (1, 6, 7)
    assert torch.equal(batches[0]["pixels"], batches[1]["pixels"])


def test_text_batches_pad_to_the_longest_and_mask_padding(small_imdb: Path) -> None:
    module = _datamodule(
        "imdb_transformer", f"data.path={small_imdb}", "data.max_length=48", "data.tokenizer.vocab_size=1000"
    )
    batch = next(iter(module.val_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) <= 48
    assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == module.pad_id)
    assert module.facts()["vocab_size"] <= 1000


def test_lm_blocks_are_contiguous_text(small_shakespeare: Path) -> None:
    module = _datamodule("shakespeare_gpt", f"data.path={small_shakespeare}", "data.block_size=64")
    source = (small_shakespeare / "input.txt").read_text()
    block = module.train_set[0]["input_ids"]
    assert block.shape == (65,)
    assert module.tokenizer.decode(block.tolist()) in source
    # The character tokenizer keeps case and newlines and knows the whole alphabet.
    assert module.facts()["vocab_size"] == len(set(source)) + 2  # + [PAD], [UNK]


def test_the_tokenised_cache_is_reused(small_imdb: Path, tmp_path: Path) -> None:
    words = (f"data.path={small_imdb}", f"data.cache_dir={tmp_path / 'cache'}", "data.tokenizer.vocab_size=1000")
    _datamodule("imdb_lstm", *words)
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert any(p.suffix == ".arrow" for p in cached) and any(p.suffix == ".json" for p in cached)

    second = _datamodule("imdb_lstm", *words)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert after == cached, "the second run wrote to the cache instead of reading it"
    assert Path(second.train_set.cache_files[0]["filename"]) in cached

    changed = _datamodule("imdb_lstm", *words, "data.max_length=32")
    assert Path(changed.train_set.cache_files[0]["filename"]) not in cached


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize(("samples", "micro", "accum"), [(33, 16, 1), (100, 4, 2), (1293, 16, 1), (7, 2, 3)])
def test_schedule_length_counts_the_batches_the_train_loader_yields(samples, micro, accum, world_size) -> None:
    """The learning-rate schedule is sized before any loader exists; it must match what each rank's
    sharded train loader really yields (the sampler drops the remainder that does not divide)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    from trainer.data.base import ResumableSampler
    from trainer.distributed.batching import BatchPlan, total_optimizer_steps

    plan = BatchPlan(micro * accum * world_size, micro, world_size, accum)
    data = list(range(samples))
    for rank in range(world_size):
        sampler = ResumableSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=0, drop_last=True)
        batches = len(StatefulDataLoader(data, sampler=sampler, batch_size=micro))
        # Lightning steps the optimizer at an epoch's end even after a partial accumulation.
        assert total_optimizer_steps(samples, plan, 2, -1, None) == 2 * -(-batches // accum)


def test_images_in_any_mode_train_as_predict_reads_them(tmp_path: Path) -> None:
    """Palette, 16-bit, RGBA: pixels are colours and intensities (not palette indices, not clipped), in training
    and in `trainer predict` alike."""
    import numpy as np
    from PIL import Image

    from trainer.data.base import LabelMap
    from trainer.data.image import ImageTransform
    from trainer.predict.inputs import image_batch

    palette = Image.new("P", (4, 3))
    palette.putpalette([200, 10, 30] * 256)
    deep = Image.fromarray(np.full((3, 4), 40000, dtype=np.uint16))
    alpha = Image.new("RGBA", (4, 3), (5, 6, 7, 0))
    images = {"palette.png": palette, "deep.png": deep, "alpha.png": alpha}
    transform = ImageTransform("image", "label", 0.0, 1.0, LabelMap(["0"]), size=(3, 4), channels=3)
    for name, image in images.items():
        image.save(tmp_path / name)
        trained = transform({"image": [Image.open(tmp_path / name)], "label": [0]})["pixels"]
        predicted = image_batch([str(tmp_path / name)], {"channels": 3, "image_size": [3, 4], "mean": 0.0, "std": 1.0})
        assert np.allclose(trained.numpy(), predicted, atol=1e-6), name
    assert np.allclose(transform({"image": [palette], "label": [0]})["pixels"][0, :, 0, 0].numpy() * 255, [200, 10, 30])
    assert round(float(transform({"image": [deep], "label": [0]})["pixels"][0, 0, 0, 0]) * 255) == 156  # 40000/65535
