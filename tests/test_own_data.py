"""Your own data as it comes: the README's recipe for each task run on files made here, text and odd integer
labels kept by name, images of mixed sizes resized by the setting (or refused in one line)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import REPO
from helpers import FAST, NEGATIVE_WORDS, POSITIVE_WORDS, metric_series, one_error_line, sentiment_csvs

QUICK = ("trainer.max_steps=4", "trainer.max_epochs=null", *FAST)


def readme_recipes() -> dict[str, str]:
    """The README's own-data recipes, by file name: the text a user copies."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(# trainer fit (my_\w+\.yaml)\n.*?)```", text, re.DOTALL)
    return {name: body for body, name in blocks}


def _photos(folder: Path) -> None:
    """Colour photos of every size, two classes, train and test split folders."""
    from PIL import Image

    for split, count in (("train", 24), ("test", 8)):
        for index in range(count):
            label = ("cat", "dog")[index % 2]
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            size = (40 + 7 * index, 30 + 5 * (index % 4))
            colour = (200, 60, 60) if label == "cat" else (60, 60, 200)
            Image.new("RGB", size, color=colour).save(folder / split / label / f"{index}.jpg")


def test_the_readme_has_a_recipe_for_each_task() -> None:
    assert {"my_photos.yaml", "my_reviews.yaml", "my_corpus.yaml"} <= set(readme_recipes())


@pytest.mark.parametrize("name", ["my_photos.yaml", "my_reviews.yaml", "my_corpus.yaml"])
def test_each_readme_recipe_trains_on_data_laid_out_as_it_says(
    name: str, tmp_path: Path, small_shakespeare: Path, main_cli
) -> None:
    (tmp_path / name).write_text(readme_recipes()[name])
    data = tmp_path / "data"
    if name == "my_photos.yaml":
        _photos(data / "photos")
    elif name == "my_reviews.yaml":
        sentiment_csvs(data / "reviews", train=120, test=40)
    else:
        data.mkdir()
        (data / "corpus.txt").write_text((small_shakespeare / "input.txt").read_text()[:20_000])
    small = {"my_photos.yaml": ["model.channels=[4,8]", "data.image_size=[16,16]", "data.global_batch_size=8"],
             "my_reviews.yaml": ["model.d_model=16", "data.tokenizer.vocab_size=200", "data.max_length=16"],
             "my_corpus.yaml": ["model.d_model=16", "model.n_layers=1", "data.block_size=32"]}[name]  # fmt: skip
    # The default logging interval, longer than an epoch of this data.
    result = main_cli("fit", name, *small, *QUICK, "trainer.log_every_n_steps=50", "run_dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smaller than the logging interval" not in result.stderr  # a small data set is no mistake
    summary = json.loads(result.stdout)
    assert summary["global_step"] == 4
    # Shorter than its logging interval, the run still logs its training steps: its report has curves.
    assert len(metric_series(tmp_path / "run", "train/loss")) == 4
    if name != "my_corpus.yaml":
        names = json.loads((tmp_path / "run" / "inputs.json").read_text())["label_names"]
        assert names == (["cat", "dog"] if name == "my_photos.yaml" else ["negative", "positive"])


def test_text_labels_are_named_in_predictions_and_the_report(tmp_path: Path, main_cli) -> None:
    reviews = sentiment_csvs(tmp_path / "reviews")
    words = ("fit", "imdb_lstm", f"data.path={reviews}", "data.name=null", "data.text_column=review",
             "data.label_column=sentiment", "data.tokenizer.vocab_size=400", "data.max_length=16",
             "data.global_batch_size=16", "model.embed_dim=16", "model.hidden_size=16", "optim.lr=0.01",
             "scheduler.warmup_steps=0", "trainer.max_steps=60", "trainer.max_epochs=null", "run_dir=run",
             *FAST)  # fmt: skip
    result = main_cli(*words, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["test"]["test/acc"] > 0.9
    predicted = main_cli("predict", "run", f"the film was {POSITIVE_WORDS[0]}", f"it was {NEGATIVE_WORDS[0]}",
                         cwd=tmp_path)  # fmt: skip
    assert [line.split("\t")[0] for line in predicted.stdout.splitlines()] == ["positive", "negative"]
    assert main_cli("report", "run", cwd=tmp_path).returncode == 0
    matrix = (tmp_path / "run" / "report" / "confusion_matrix.csv").read_text()
    assert "negative" in matrix and "positive" in matrix, matrix


def test_integer_labels_that_are_not_0_to_n_minus_1_make_no_extra_class(tmp_path: Path, main_cli) -> None:
    """Ratings 1..5, and ids far beyond any class count: N classes named by their values, nothing allocated
    from a label's size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"review {i} " + ("good " * (i % 5)) for i in range(200)]
    for case, labels in (("ratings", [1 + i % 5 for i in range(200)]),
                         ("ids", [(1000, 2_000_000_000_000)[i % 2] for i in range(200)])):  # fmt: skip
        (tmp_path / case).mkdir()
        pq.write_table(pa.table({"text": texts, "label": labels}), tmp_path / case / "train.parquet")
        run = tmp_path / f"run_{case}"
        result = main_cli("fit", "imdb_lstm", f"data.path={tmp_path / case}", "data.tokenizer.vocab_size=100",
                          "data.max_length=16", "data.global_batch_size=16", "model.embed_dim=8",
                          "model.hidden_size=8", f"run_dir={run}", *QUICK)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        expected = ["1", "2", "3", "4", "5"] if case == "ratings" else ["1000", "2000000000000"]
        assert json.loads((run / "inputs.json").read_text())["label_names"] == expected
        hparams = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
        assert hparams["model_kwargs"]["num_classes"] == len(expected)


def test_photos_of_mixed_sizes_are_one_line_without_the_setting(tmp_path: Path, main_cli) -> None:
    _photos(tmp_path / "photos")
    line = one_error_line(main_cli("fit", "digits_cnn", "data.path=photos", "data.name=null", cwd=tmp_path))
    assert "the images differ in size or channels (30x40x3, 30x68x3, " in line and "data.image_size=" in line, line
    assert not (tmp_path / "runs").exists()
