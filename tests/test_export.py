"""From a trained run to use: `trainer export` in every format, and `trainer predict` from each export and from
the run itself, for every model family: the same predictions everywhere, made the way training made its inputs."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, fit, one_error_line
from PIL import Image

from trainer import api
from trainer.errors import UserError
from trainer.export.graph import UnpackedLSTMClassifier, check_parity
from trainer.models import LSTMClassifier
from trainer.predict.run import Options, predict

FORMATS = ("safetensors", "onnx", "torchscript")
# Small models, a few steps each: what is tested is that every path gives the same numbers, not accuracy.
FAMILIES = {
    "cnn": ("digits_cnn", ["model.channels=[8,16]", "trainer.max_steps=8"]),
    "lstm_classifier": ("imdb_lstm", ["model.embed_dim=16", "model.hidden_size=16", "model.num_layers=2",
                                      "data.max_length=48", "data.tokenizer.vocab_size=400", "trainer.max_steps=3"]),
    "transformer_classifier": ("imdb_transformer", ["model.d_model=32", "model.n_layers=1", "data.max_length=48",
                                                    "data.tokenizer.vocab_size=400", "trainer.max_steps=3"]),
    "gpt": ("shakespeare_gpt", ["model.d_model=32", "model.n_heads=4", "model.n_layers=1", "data.block_size=32",
                                "trainer.max_steps=3"]),
    "lstm_lm": ("shakespeare_lstm", ["model.embed_dim=16", "model.hidden_size=24", "data.block_size=32",
                                     "trainer.max_steps=3"]),
}  # fmt: skip
TEXTS = ["A wonderful film, the best acting I have seen in years.", "Dull, slow and far too long.", "ok"]
PROMPTS = ["ROMEO:", "\n"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, small_imdb: Path, small_shakespeare: Path):
    """family -> a finished run directory, trained on first use (in process, offline, with a module cache)."""
    root = tmp_path_factory.mktemp("export_runs")
    data = {"imdb_lstm": small_imdb, "imdb_transformer": small_imdb, "shakespeare_gpt": small_shakespeare,
            "shakespeare_lstm": small_shakespeare}  # fmt: skip
    runs: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in runs:
            recipe, overrides = FAMILIES[family]
            path = [f"data.path={data[recipe]}"] if recipe in data else []
            with pytest.MonkeyPatch.context() as env:
                env.setenv("TRAINER_CACHE", str(root / "cache"))
                env.setenv("HF_DATASETS_OFFLINE", "1")
                env.setenv("HF_HUB_OFFLINE", "1")
                fit(recipe, *path, *overrides, *FAST, "trainer.accelerator=cpu", f"run_dir={root / family}")
            runs[family] = root / family
        return runs[family]

    return get


def _inputs(family: str, run_dir: Path, folder: Path) -> list[str]:
    if family == "cnn":
        return _digit_pngs(folder, count=12)
    return TEXTS if family.endswith("classifier") else PROMPTS


def _digit_pngs(folder: Path, count: int) -> list[str]:
    """Test images of the digits set as PNG files, and their labels in the file names."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:02d}_label{digits.target[-index - 1]}.png"
        # The same uint8 pixels the framework's digits set holds (trainer.data.sources).
        Image.fromarray(np.round(digits.images[-index - 1] * (255 / 16)).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_export_predicts_what_the_checkpoint_predicts(trained, family: str, tmp_path: Path) -> None:
    run_dir = trained(family)
    words = _inputs(family, run_dir, tmp_path / "images")
    greedy = Options(temperature=0, max_new_tokens=12, top_k=3, batch_size=2)
    sampled = Options(temperature=0.9, max_new_tokens=12, seed=7, top_k=5)
    own = {options: predict(run_dir, words, options) for options in (greedy, sampled)}
    assert len(own[greedy]) == len(words)

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    for fmt in FORMATS:
        folder = api.export(run_dir, fmt=fmt)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["format"] == fmt and manifest["family"] in ("cnn", "lstm", "transformer")
        assert manifest["source"]["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        assert manifest["metrics"]["val/loss"] > 0
        assert manifest["dynamic_axes"][manifest["inputs"][0]["name"]]["0"] == "batch"
        if fmt != "safetensors":
            assert manifest["parity"]["max_abs_difference"] <= manifest["parity"]["atol"]
        for options, expected in own.items():
            got = predict(folder, words, options)
            if family.startswith(("gpt", "lstm_lm")):
                assert [r["text"] for r in got] == [r["text"] for r in expected], fmt
            else:
                assert [r["label"] for r in got] == [r["label"] for r in expected], fmt
                for mine, theirs in zip(got, expected, strict=True):
                    assert [e["index"] for e in mine["top_k"]] == [e["index"] for e in theirs["top_k"]]
                    assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-4)


def test_image_predictions_are_made_as_training_made_its_inputs(trained, tmp_path: Path) -> None:
    """PNG files through `predict` give the probabilities the model gives the training pipeline's tensors."""
    from trainer.data.base import LabelMap
    from trainer.data.image import ImageTransform
    from trainer.export import load_exported

    run_dir = trained("cnn")
    paths = _digit_pngs(tmp_path, count=16)
    results = predict(api.export(run_dir), paths, Options())
    model = load_exported(run_dir / "export")
    arrays = [np.asarray(Image.open(p)) for p in paths]
    cfg = api.load_config_file(run_dir / "config.yaml")
    transform = ImageTransform("image", "label", cfg.data.normalize_mean, cfg.data.normalize_std, LabelMap(["0"]))
    tensors = transform({"image": arrays, "label": [0] * len(arrays)})
    with torch.no_grad():
        probabilities = torch.softmax(model(tensors["pixels"]), dim=-1)
    assert [r["index"] for r in results] == probabilities.argmax(dim=-1).tolist()
    assert [r["probability"] for r in results] == pytest.approx(probabilities.max(dim=-1).values.tolist(), abs=1e-5)


def test_text_predictions_are_tokenised_as_training_tokenised(trained, small_imdb: Path) -> None:
    """The same ids, padding and mask as the data module's, for the same reviews."""
    import datasets
    from tokenizers import Tokenizer

    from trainer.build import build_datamodule
    from trainer.distributed.batching import plan_batches
    from trainer.predict.inputs import text_batch

    run_dir = trained("lstm_classifier")
    cfg = api.load_config_file(run_dir / "config.yaml")
    module = build_datamodule(cfg, plan_batches(8, None, 1), tokenizer_path=run_dir / "tokenizer.json")
    module.load()
    texts = datasets.load_dataset(str(small_imdb), split="test")["text"][:6]
    expected = module.collate_fn([module.test_set[i] for i in range(6)])
    manifest = json.loads((api.export(run_dir) / "manifest.json").read_text())
    got = text_batch(Tokenizer.from_file(str(run_dir / "tokenizer.json")), texts, manifest["preprocess"])
    assert np.array_equal(got["input_ids"], expected["input_ids"].numpy())
    assert np.array_equal(got["attention_mask"], expected["attention_mask"].numpy())


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_the_unpacked_lstm_is_the_packed_one(bidirectional: bool, pooling: str) -> None:
    """ONNX and TorchScript get the LSTM classifier without PackedSequence: the same logits, any padding."""
    torch.manual_seed(0)
    model = LSTMClassifier(50, 3, embed_dim=8, hidden_size=6, num_layers=2, bidirectional=bidirectional,
                           pooling=pooling).eval()  # fmt: skip
    lengths = torch.tensor([9, 1, 5, 9, 3])
    mask = (torch.arange(9)[None, :] < lengths[:, None]).long()
    ids = torch.randint(1, 50, (5, 9)).masked_fill(mask == 0, 0)
    with torch.no_grad():
        assert torch.allclose(UnpackedLSTMClassifier(model)(ids, mask), model(ids, mask), atol=1e-6)


def test_a_graph_that_differs_from_pytorch_is_refused(trained) -> None:
    source = api.export_source(trained("cnn"))
    model = source.model()

    def off_by_a_little(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(images)).numpy() + 0.01

    with pytest.raises(UserError, match="differ from PyTorch's by up to 0.01"):
        check_parity(model, source.model_io, off_by_a_little, "ONNX")


def test_exports_are_readable_by_the_group(trained) -> None:
    run_dir = trained("gpt")
    for fmt in FORMATS:
        folder = api.export(run_dir, fmt=fmt)
        for path in folder.iterdir():
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o040, f"{path.name} is {oct(mode)}"  # umask 022 in CI: 0644


def test_predicting_from_onnx_imports_neither_torch_nor_lightning(trained, tmp_path: Path) -> None:
    folder = api.export(trained("transformer_classifier"), fmt="onnx")
    script = (
        "import sys\nfrom trainer.cli import main\n"
        f"status = main(['predict', {str(folder)!r}, 'great film', 'awful', '--json'])\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'deepspeed', 'datasets') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\nsys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == ["great film", "awful"]
    assert all(line["label"] in ("neg", "pos") for line in lines)  # IMDB's ClassLabel names


def test_predict_prints_one_line_per_input_and_says_what_a_prompt_lost(main_cli, trained, tmp_path: Path) -> None:
    folder = api.export(trained("gpt"), fmt="onnx")
    result = main_cli("predict", str(folder), "ROMEO: \u263a\u263a", "--temperature", "0", "--max-new-tokens", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ROMEO: ")
    assert "left out of the prompt, never seen in training: '\u263a'" in result.stderr

    _digit_pngs(tmp_path / "pngs", count=7)
    digits = main_cli("predict", str(trained("cnn")), str(tmp_path / "pngs"), "--batch-size", "5")  # a folder of images
    assert digits.returncode == 0, digits.stderr[-3000:]
    rows = [line.split("\t") for line in digits.stdout.splitlines()]
    assert len(rows) == 7 and all(label in "0123456789" and 0 <= float(p) <= 1 for label, p, _ in rows)


def test_bad_input_to_export_and_predict_is_one_line(main_cli, trained, tmp_path: Path) -> None:
    image_run, gpt_run = trained("cnn"), trained("gpt")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    lines_file = tmp_path / "empty.txt"
    lines_file.write_text("\n  \n")
    cases = [
        (["export", str(tmp_path / "nowhere")], "does not exist"),
        (["export", str(image_run), "format=tflite"], "format='tflite' is not an export format"),
        (["export", str(image_run), "ckpt=/no/such.ckpt"], "does not exist"),
        (["predict", str(tmp_path / "nowhere"), "x"], "does not exist"),
        (["predict", str(tmp_path), "x"], "neither an export folder"),
        (["predict", str(image_run), str(not_an_image)], "cannot read image"),
        (["predict", str(image_run), "a review, not a picture"], "this model classifies images"),
        (["predict", str(trained("lstm_classifier")), ""], "an input text is empty"),
        (["predict", str(trained("lstm_classifier")), str(lines_file)], "holds no text"),
        (["predict", str(gpt_run), "\u263a\u263a"], "holds nothing the model has seen"),
        (["predict", str(gpt_run), "ROMEO:", "--temperature", "-1"], "is not a number of 0 or more"),
        (["predict", str(gpt_run), "ROMEO:", "--batch-size", "0"], "is not a count of 1 or more"),
    ]
    before = sorted(p.name for p in image_run.iterdir())
    for words, expected in cases:
        assert expected in one_error_line(main_cli(*words)), words
    assert sorted(p.name for p in image_run.iterdir()) == before  # a failed export leaves nothing behind


def test_a_manifest_of_another_kind_is_refused(main_cli, trained, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "onnx"}))
    assert "is not a manifest written by `trainer export`" in one_error_line(main_cli("predict", str(folder), "x"))
    (folder / "manifest.json").write_text(
        (api.export(trained("gpt"), fmt="onnx") / "manifest.json").read_text().replace('"model.onnx"', '"../x.onnx"')
    )
    assert "is not a file name" in one_error_line(main_cli("predict", str(folder), "ROMEO:"))
    export = trained("gpt") / "export-onnx"
    os.rename(export / "model.onnx", tmp_path / "moved.onnx")
    assert "lacks its model file model.onnx" in one_error_line(main_cli("predict", str(export), "ROMEO:"))
    (export / "model.onnx").write_bytes(b"\x08\x07 not a protobuf")  # damaged
    assert "cannot be loaded" in one_error_line(main_cli("predict", str(export), "ROMEO:"))


def test_out_never_replaces_what_is_not_an_export(main_cli, trained, tmp_path: Path) -> None:
    """out= naming the run itself, a folder above it, or any folder with other files is refused untouched."""
    run_dir = trained("cnn")
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "thesis.tex").write_text("precious")
    (keep / "model.json").write_text('{"name": "my web app"}')  # a file name exports use, among others
    for out in (run_dir, run_dir.parent, keep):
        before = sorted(p.name for p in out.iterdir())
        assert "is not an earlier export" in one_error_line(main_cli("export", str(run_dir), f"out={out}"))
        assert sorted(p.name for p in out.iterdir()) == before
    fresh = main_cli("export", str(run_dir), f"out={tmp_path / 'models' / 'digits'}", "format=torchscript")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    again = main_cli("export", str(run_dir), f"out={tmp_path / 'models' / 'digits'}")  # an earlier export: replaced
    assert again.returncode == 0 and (tmp_path / "models" / "digits" / "model.safetensors").is_file()
    assert not (tmp_path / "models" / "digits" / "model.pt").exists()
    inside = one_error_line(main_cli("export", str(run_dir), f"out={tmp_path / 'models' / 'digits' / 'sub'}"))
    assert "is inside the export" in inside  # the next export would sweep it away
    here = tmp_path / "here"
    here.mkdir()
    dot = subprocess.run([sys.executable, "-m", "trainer", "export", str(run_dir), "out=."], cwd=here,
                         capture_output=True, text=True)  # fmt: skip
    assert dot.returncode == 0 and (here / "manifest.json").is_file(), dot.stderr[-3000:]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"preprocess.image_size": [8]}, "is not [height, width]"),
        ({"preprocess.image_size": [100000, 100000]}, "is not a whole number from 1 to 8192"),
        ({"preprocess.channels": 3}, "does not match input shape"),
        ({"preprocess.mean": "x"}, "preprocess.mean='x' is not a number"),
        ({"labels": []}, "labels are not 10 names"),
        ({"preprocess": [1]}, "is not a manifest written by `trainer export`"),
    ],
)
def test_a_manifest_edited_by_hand_is_checked(main_cli, trained, tmp_path: Path, edit: dict, expected: str) -> None:
    folder = tmp_path / "edited"
    source = api.export(trained("cnn"), fmt="onnx")
    folder.mkdir()
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    for key, value in edit.items():
        section, _, field = key.partition(".")
        if field:
            manifest[section][field] = value
        else:
            manifest[section] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    line = one_error_line(main_cli("predict", str(folder), _digit_pngs(tmp_path / "pngs", count=1)[0]))
    assert "is not a manifest written by `trainer export`" in line and expected in line


def test_odd_inputs_are_made_right_or_refused(main_cli, trained, tmp_path: Path) -> None:
    """16-bit greyscale scaled, not clipped; a folder given to a text model, a negative seed, another run's
    tokenizer: one line each."""
    from sklearn.datasets import load_digits

    export = api.export(trained("cnn"), fmt="onnx")
    digit = load_digits().images[-1]
    Image.fromarray(np.round(digit * (255 / 16)).astype(np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray(np.round(digit * (65535 / 16)).astype(np.uint16)).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    eight, sixteen = predict(export, [str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png")], Options())
    assert sixteen["index"] == eight["index"] and sixteen["probability"] == pytest.approx(eight["probability"], 1e-3)

    classifier = trained("lstm_classifier")
    assert "is a folder" in one_error_line(main_cli("predict", str(classifier), str(tmp_path)))
    gpt = api.export(trained("gpt"), fmt="onnx")
    assert "not a whole number of 0 or more" in one_error_line(main_cli("predict", str(gpt), "ROMEO:", "--seed", "-1"))
    (gpt / "tokenizer.json").write_bytes((classifier / "tokenizer.json").read_bytes())
    assert "is not the tokenizer this model was trained with" in one_error_line(main_cli("predict", str(gpt), "ROMEO:"))


def _edited_copy(source: Path, folder: Path, edit) -> Path:
    """A copy of an export with its manifest changed by `edit(manifest)`."""
    folder.mkdir(parents=True)
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _fewer_labels(manifest: dict) -> None:
    """5 labels for a 10-logit model, consistent within the manifest: only the model can tell."""
    manifest["labels"] = manifest["labels"][:5]
    manifest["outputs"][0]["shape"][-1] = 5


def _bigger_images(manifest: dict) -> None:
    manifest["preprocess"]["image_size"] = [16, 16]
    manifest["inputs"][0]["shape"][2:] = [16, 16]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_manifest_is_checked_against_the_model_file_it_describes(main_cli, trained, tmp_path: Path, fmt) -> None:
    """Edits that keep manifest.json consistent within itself: what the model file holds (the description
    sealed into it at export, an ONNX graph's own shapes) tells them, in one line naming the field."""
    source = api.export(trained("cnn"), fmt=fmt)
    image = _digit_pngs(tmp_path / "pngs", count=1)[0]
    for name, edit, expected in (("labels", _fewer_labels, ("labels", "logits")),
                                 ("size", _bigger_images, ("shape[2]=16", "images"))):  # fmt: skip
        line = one_error_line(main_cli("predict", str(_edited_copy(source, tmp_path / name, edit)), image))
        assert "export the run again" in line and any(word in line for word in expected), (name, line)
    if fmt == "safetensors":
        os.remove(tmp_path / "size" / "model.json")
        line = one_error_line(main_cli("predict", str(tmp_path / "size"), image))
        assert "lacks model.json, which its model needs" in line


def test_text_limits_and_the_tokenizer_are_checked_against_the_model(main_cli, trained, tmp_path: Path) -> None:
    classifier, gpt = trained("transformer_classifier"), trained("gpt")

    def longer_texts(manifest: dict) -> None:
        manifest["preprocess"]["max_length"] = 4096  # beyond the positions the model was trained with

    def longer_context(manifest: dict) -> None:
        manifest["preprocess"]["context_length"] = manifest["max_sequence"] = 4096

    for run_dir, edit, field, words in ((classifier, longer_texts, "preprocess.max_length=4096", TEXTS[:1]),
                                        (gpt, longer_context, "max_sequence=4096", PROMPTS[:1])):  # fmt: skip
        edited = _edited_copy(api.export(run_dir, fmt="onnx"), tmp_path / run_dir.name, edit)
        assert field in one_error_line(main_cli("predict", str(edited), *words))
    # Another tokenizer of the same vocabulary size (two of its tokens swapped), in the export and in the run.
    other = json.loads((classifier / "tokenizer.json").read_text())
    vocab = other["model"]["vocab"]
    first, second = list(vocab)[5:7]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    export = _edited_copy(api.export(classifier, fmt="onnx"), tmp_path / "swapped", lambda manifest: None)
    (export / "tokenizer.json").write_text(json.dumps(other))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "inputs.json", "checkpoints/last.ckpt"):
        (run / name).write_bytes((classifier / name).read_bytes())
    (run / "tokenizer.json").write_text(json.dumps(other))
    for folder in (export, run):
        line = one_error_line(main_cli("predict", str(folder), *TEXTS[:1]))
        assert "is not the tokenizer this model was trained with" in line, folder


def test_an_onnx_lstm_language_model_generates_without_shape_warnings(trained, tmp_path: Path) -> None:
    """Its graph declares a dynamic length, as the others do: onnxruntime warned at every generated token."""
    export = api.export(trained("lstm_lm"), fmt="onnx")
    result = subprocess.run([sys.executable, "-m", "trainer", "predict", str(export), "ROMEO:", "--max-new-tokens",
                             "8"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VerifyOutputSizes" not in result.stderr and len(result.stdout) > len("ROMEO:")
