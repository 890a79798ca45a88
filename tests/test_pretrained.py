"""Pretrained weights: a Transformers encoder fine-tuned for text classification and a causal LM trained on, from
local folders (tiny models built here: no hub), through every command; and warm starts from an earlier run."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from callbacks import SignalAt
from helpers import FAST, NEGATIVE_WORDS, NEUTRAL_WORDS, POSITIVE_WORDS, fit, one_error_line, sentiment_csvs
from pretrained_models import tiny_bert, tiny_gpt2

from trainer import api
from trainer.export import load_exported

STEPS = 40


def _recipe(folder: Path, model: str, data: str, task: str = "text_classification") -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"# trainer fit recipe.yaml\ntask: {task}\nmodel: {model}\ndata: {data}\n"
                      f"optim: {{lr: 0.005}}\nscheduler: {{name: linear, warmup_steps: 3}}\n"
                      f"trainer: {{max_steps: {STEPS}}}\n")  # fmt: skip
    return recipe


@pytest.fixture(scope="session")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sentiment_csvs(tmp_path_factory.mktemp("reviews"))


@pytest.fixture(scope="session")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny BERT that knows the reviews' words: a stand-in for a hub checkpoint."""
    return tiny_bert(tmp_path_factory.mktemp("bert"), [*POSITIVE_WORDS, *NEGATIVE_WORDS, *NEUTRAL_WORDS])


def _classifier_recipe(folder: Path, pretrained: Path, reviews: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = (f"{{path: {reviews}, text_column: review, label_column: sentiment, max_length: 16, "
            "global_batch_size: 16}")  # fmt: skip
    return _recipe(folder, f"{{family: huggingface, pretrained: {pretrained}}}", data)


@pytest.fixture(scope="session")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory, bert: Path, reviews: Path, session_cache: Path) -> Path:
    """The tiny BERT fine-tuned on the reviews, once for the tests that read it."""
    root = tmp_path_factory.mktemp("fine_tuned")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRAINER_CACHE", str(session_cache / "trainer"))
        fit(str(_classifier_recipe(root, bert, reviews)), f"run_dir={root / 'run'}", *FAST)
    return root / "run"


def test_a_fine_tuned_encoder_learns_and_exports_for_plain_transformers(fine_tuned: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    summary = json.loads((fine_tuned / "summary.json").read_text())
    assert summary["test"]["test/acc"] > 0.9 and summary["flops_per_sample"] > 0
    assert json.loads((fine_tuned / "inputs.json").read_text())["label_names"] == ["negative", "positive"]

    export = api.export(fine_tuned)
    plain = AutoModelForSequenceClassification.from_pretrained(str(export)).eval()  # no trainer code at all
    assert plain.config.id2label == {0: "negative", 1: "positive"}
    ours = load_exported(export)
    ids = torch.tensor([[2, 40, 41, 3], [2, 45, 3, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids, attention_mask=mask).logits, ours(ids, mask), atol=1e-6)


def test_predictions_name_the_text_labels_from_every_export(fine_tuned: Path, main_cli) -> None:
    texts = ["the film was superb", "it was dull and the plot weak"]
    for fmt, folder in (("safetensors", "export"), ("onnx", "export-onnx")):
        assert main_cli("export", str(fine_tuned), f"format={fmt}").returncode == 0
        result = main_cli("predict", str(fine_tuned / folder), *texts)
        assert result.returncode == 0, result.stderr[-3000:]
        assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["positive", "negative"], fmt
    manifest = json.loads((fine_tuned / "export-onnx" / "manifest.json").read_text())
    assert manifest["labels"] == ["negative", "positive"] and manifest["model"]["model_type"] == "bert"


def test_pretrained_weights_are_really_loaded(fine_tuned: Path, bert: Path, reviews: Path, tmp_path: Path) -> None:
    """The fine-tuned export as the pretrained folder of a new run scores far above chance at its first
    evaluation (one step at a negligible learning rate); the random tiny BERT it started from is at chance."""
    export = api.export(fine_tuned)
    first = ("trainer.max_steps=1", "optim.lr=1e-9", "scheduler.name=none", *FAST)
    warm = fit(str(_classifier_recipe(tmp_path / "warm", export, reviews)), *first, f"run_dir={tmp_path / 'w'}")
    cold = fit(str(_classifier_recipe(tmp_path / "cold", bert, reviews)), *first, f"run_dir={tmp_path / 'c'}")
    assert warm["val"]["val/acc"] > 0.9, warm["val"]
    assert cold["val"]["val/acc"] < 0.75, cold["val"]
    # init_from over a pretrained folder: the random BERT, then the fine-tuned run's weights over it, read with
    # that run's own tokenizer.
    over = fit(str(_classifier_recipe(tmp_path / "over", bert, reviews)), *first, f"init_from={fine_tuned}",
               f"run_dir={tmp_path / 'o'}")  # fmt: skip
    assert over["val"]["val/acc"] > 0.9, over["val"]
    assert (tmp_path / "o" / "tokenizer.json").read_text() == (fine_tuned / "tokenizer.json").read_text()


def test_a_pretrained_run_resumes_exactly(bert: Path, reviews: Path, tmp_path: Path) -> None:
    recipe = str(_classifier_recipe(tmp_path, bert, reviews))
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    fit(recipe, "trainer.max_steps=12", f"run_dir={straight}", *FAST)
    config = api.resolve_fit_config(recipe, ["trainer.max_steps=12", f"run_dir={stopped}", *FAST])
    assert api.fit(config, callbacks=[SignalAt(5, signal.SIGTERM)])["global_step"] == 5
    assert fit(recipe, f"resume={stopped}")["global_step"] == 12
    expected, actual = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                        for run in (straight, stopped))  # fmt: skip
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_a_pretrained_causal_lm_trains_generates_and_exports(tmp_path: Path, small_shakespeare: Path, main_cli) -> None:
    from transformers import AutoModelForCausalLM

    text = (small_shakespeare / "input.txt").read_text()
    gpt = tiny_gpt2(tmp_path / "gpt", text)
    data = f"{{path: {small_shakespeare}, block_size: 32, global_batch_size: 16}}"
    recipe = _recipe(tmp_path, f"{{family: huggingface, pretrained: {gpt}}}", data, "language_modeling")
    run = tmp_path / "run"
    fitted = main_cli("fit", str(recipe), "trainer.max_steps=8", f"run_dir={run}", *FAST)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    assert "trainer: pretrained weights from" in fitted.stderr
    generated = main_cli("generate", str(recipe), f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
                         "generate.prompt=ROMEO:", "generate.max_new_tokens=10")  # fmt: skip
    assert generated.returncode == 0 and generated.stdout.startswith("ROMEO:"), generated.stderr[-2000:]
    assert AutoModelForCausalLM.from_pretrained(str(api.export(run))).config.model_type == "gpt2"
    assert main_cli("export", str(run), "format=onnx").returncode == 0
    predicted = main_cli("predict", str(run / "export-onnx"), "ROMEO:", "--max-new-tokens", "5")
    assert predicted.returncode == 0 and predicted.stdout.startswith("ROMEO:"), predicted.stderr[-2000:]
    planned = main_cli("plan", str(recipe))
    assert planned.returncode == 0 and "parameters" in planned.stdout, planned.stderr[-2000:]


def test_a_warm_start_takes_an_earlier_runs_weights_and_a_new_head(tmp_path: Path, main_cli) -> None:
    """init_from: a digits CNN, then the same CNN on a 2-class image folder: every layer but the head carries over."""
    from PIL import Image

    first = fit("digits_cnn", "trainer.max_steps=40", f"run_dir={tmp_path / 'digits'}", *FAST)
    assert first["val"]["val/acc"] > 0.8
    again = fit("digits_cnn", "trainer.max_steps=1", "optim.lr=1e-9", f"init_from={tmp_path / 'digits'}",
                f"run_dir={tmp_path / 'again'}", *FAST)  # fmt: skip
    assert again["val"]["val/acc"] > 0.8  # at its first evaluation: the weights came with it
    for index in range(40):
        folder = tmp_path / "shapes" / "train" / ("dark" if index % 2 else "light")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), color=40 if index % 2 else 220).save(folder / f"{index}.png")
    result = main_cli("fit", "digits_cnn", f"data.path={tmp_path / 'shapes'}", "data.name=null",
                      "data.global_batch_size=8", "trainer.max_steps=2", f"init_from={api.export(tmp_path / 'digits')}",
                      f"run_dir={tmp_path / 'shapes_run'}", *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = next(line for line in result.stderr.splitlines() if line.startswith("trainer: weights from"))
    assert "starting fresh: head" in loaded, loaded


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["model.pretrained=/no/such/folder"], "'/no/such/folder' is not a folder, nor in the Hugging Face cache"),
        (["model.pretrained=EMPTY"], "model.pretrained: cannot read the config of"),
        (["data.max_length=400"], "data.max_length=400 is more than the 128 positions model.pretrained was trained"),
        (["init_from=/no/such/run"], "init_from='/no/such/run' does not exist"),
        (["model.pretrained=NOWEIGHTS"], "model.pretrained: cannot load the weights of"),
        (["model.pretrained=BROKENWEIGHTS"], "model.pretrained: cannot load the weights of"),
        (["model.pretrained=NOHEAD"], "model.pretrained: a vit model has no sequence-classification head"),
    ],
)
def test_pretrained_settings_that_cannot_work_are_one_line(
    bert: Path, reviews: Path, tmp_path: Path, words: list[str], expected: str, main_cli
) -> None:
    (tmp_path / "empty").mkdir()
    broken = {"EMPTY": tmp_path / "empty"}
    for name, damage in (("NOWEIGHTS", "remove"), ("BROKENWEIGHTS", "truncate")):
        broken[name] = shutil.copytree(bert, tmp_path / name.lower())
        weights = broken[name] / "model.safetensors"
        weights.unlink() if damage == "remove" else weights.write_bytes(weights.read_bytes()[:100])
    broken["NOHEAD"] = shutil.copytree(bert, tmp_path / "vit")  # a vision model's config: no text head
    vit = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    (broken["NOHEAD"] / "config.json").write_text(json.dumps(vit))
    for name, folder in broken.items():
        words = [w.replace(name, str(folder)) for w in words]
    recipe = _classifier_recipe(tmp_path / "project", bert, reviews)
    line = one_error_line(main_cli("fit", str(recipe), *words, cwd=tmp_path))
    assert expected in line, line
    assert not (tmp_path / "runs").exists()


def test_a_decoder_without_a_padding_token_classifies_text(reviews: Path, tmp_path: Path) -> None:
    """GPT-2 style configs name no padding token, which their classification head needs to find each text's
    last token: the data's padding id is given to it."""
    text = (reviews / "train.csv").read_text() + (reviews / "test.csv").read_text()
    gpt = tiny_gpt2(tmp_path / "gpt", text)
    summary = fit(str(_classifier_recipe(tmp_path / "project", gpt, reviews)), "trainer.max_steps=3",
                  f"run_dir={tmp_path / 'run'}", *FAST)  # fmt: skip
    assert summary["global_step"] == 3 and "test/acc" in summary["test"]
