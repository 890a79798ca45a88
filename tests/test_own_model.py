"""Your own `nn.Module` through every command: fit, resume, test, generate, export in all three formats, predict,
plan, FLOPs; and each way a class, its arguments or its forward can be wrong, as one line before anything is
written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from callbacks import SignalAt
from helpers import FAST, one_error_line
from own_models import IMAGE, MODELS, TASKS, project

from trainer import api
from trainer.config import load_config


@pytest.fixture(autouse=True)
def _forget_the_module():
    """Each project's models.py is its own: never the one an earlier test imported."""
    yield
    sys.modules.pop("models", None)


@pytest.mark.parametrize("task", TASKS)
def test_a_custom_model_goes_through_every_command(
    task: str, tmp_path: Path, small_imdb: Path, small_shakespeare: Path, main_cli
) -> None:
    class_path, data = TASKS[task]
    recipe = project(
        tmp_path / "project",
        class_path,
        data.replace("IMDB", str(small_imdb)).replace("SHAKESPEARE", str(small_shakespeare)),
    )
    elsewhere = tmp_path / "elsewhere"  # the recipe's folder is importable from any working directory
    elsewhere.mkdir()
    run = elsewhere / "run"
    fitted = main_cli("fit", str(recipe), f"run_dir={run}", *FAST, cwd=elsewhere)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    summary = json.loads(fitted.stdout)
    assert summary["global_step"] == 6 and summary["flops_per_sample"] > 0
    assert f"import_path: {recipe.parent}" in (run / "config.yaml").read_text()

    checked = main_cli("test", str(recipe), f"ckpt={run / 'checkpoints' / 'last.ckpt'}", cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr[-3000:]
    planned = main_cli("plan", str(recipe), "--gpus-per-node", "2", cwd=elsewhere)
    assert planned.returncode == 0 and "parameters" in planned.stdout, planned.stderr[-2000:]
    reported = main_cli("report", str(run), cwd=elsewhere)
    assert reported.returncode == 0 and (run / "report" / "report.md").is_file(), reported.stderr[-2000:]
    if task == "lm":
        generated = main_cli("generate", str(recipe), f"ckpt={run / 'checkpoints' / 'last.ckpt'}", cwd=elsewhere)
        assert generated.returncode == 0 and generated.stdout.startswith("ROMEO:"), generated.stderr[-2000:]

    for fmt in ("safetensors", "onnx", "torchscript"):
        exported = main_cli("export", str(run), f"format={fmt}", cwd=elsewhere)
        assert exported.returncode == 0, exported.stderr[-3000:]
    manifest = json.loads((run / "export-onnx" / "manifest.json").read_text())
    assert manifest["model"] == {"family": "custom", "class_path": class_path, "import_path": str(recipe.parent)}
    words = {"image": [], "text": ["a fine film", "dull"], "lm": ["ROMEO:"]}[task]
    if task == "image":
        words = [str(p) for p in _digit_pngs(tmp_path / "pngs")]
    outputs = {}
    for folder in ("export", "export-onnx", "export-torchscript"):
        predicted = main_cli("predict", str(run / folder), *words, "--json", "--max-new-tokens", "4", cwd=elsewhere)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        outputs[folder] = [json.loads(line) for line in predicted.stdout.splitlines()]
    if task == "lm":  # sampled text: each export continues the prompt
        assert all(rows[0]["text"].startswith("ROMEO:") for rows in outputs.values())
        return
    # The same classes everywhere, the same probabilities to float rounding.
    reference = outputs["export"]
    for rows in outputs.values():
        assert [r["label"] for r in rows] == [r["label"] for r in reference]
        assert [r["probability"] for r in rows] == pytest.approx([r["probability"] for r in reference], abs=1e-4)


def test_predict_from_an_onnx_export_never_imports_the_class(tmp_path: Path, cli) -> None:
    recipe = project(tmp_path / "project", *TASKS["image"])
    run = tmp_path / "run"
    assert api.fit(load_config(str(recipe), [f"run_dir={run}", *FAST]))["global_step"] == 6
    api.export(run, fmt="onnx")
    api.export(run, fmt="safetensors")
    shutil.rmtree(recipe.parent)  # the user's code is gone: an ONNX export still predicts, in a fresh process
    pngs = [str(p) for p in _digit_pngs(tmp_path / "pngs")]
    assert cli("predict", str(run / "export-onnx"), *pngs).returncode == 0
    line = one_error_line(cli("predict", str(run / "export"), *pngs))
    assert "model.class_path: cannot import 'models'" in line, line


def test_a_custom_model_resumes_exactly(tmp_path: Path) -> None:
    recipe = project(tmp_path / "project", *TASKS["image"], steps=20)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    api.fit(load_config(str(recipe), [f"run_dir={straight}", *FAST]))
    summary = api.fit(load_config(str(recipe), [f"run_dir={stopped}", *FAST]), callbacks=[SignalAt(9)])
    assert summary["stopped_by"] == "SIGTERM" and summary["global_step"] == 9
    assert api.fit(api.resolve_fit_config(str(recipe), [f"resume={stopped}"]))["global_step"] == 20
    expected, actual = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                        for run in (straight, stopped))  # fmt: skip
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


@pytest.mark.parametrize(
    ("class_path", "init_args", "expected"),
    [
        ("nowhere:Net", "{}", "model.class_path: cannot import 'nowhere': No module named 'nowhere'"),
        ("models:Nope", "{}", "model.class_path: module 'models' has no 'Nope'"),
        ("models:TinyCN", "{}", "did you mean 'TinyCNN'?"),
        ("models:Builder", "{}", "model.class_path: 'models:Builder' is a type, not an nn.Module subclass"),
        ("models:TinyCNN", "{widht: 4}", "model.init_args.widht: TinyCNN takes no argument 'widht'; did you mean "
                                         "'width'?"),
        ("models:TinyCNN", "{width: wide}", "model.init_args.width: 'wide' is not int"),
        ("models:TinyCNN", "{num_classes: 3}", "model.init_args.num_classes: 3 contradicts the data, which give "
                                               "num_classes=10"),
        ("models:OneTooMany", "{}", "forward returned shape [2, 11] float32 for inputs [2, 1, 8, 8] float32; it must "
                                    "return logits [batch, num_classes] = [2, 10]"),
        ("models:Broken", "{}", "forward failed on a batch of 2 ([2, 1, 8, 8] float32): RuntimeError: this forward "
                                "is broken"),
        ("models:TupleWhenTraining", "{}", "forward returned a tuple in training mode for inputs [3, 1, 8, 8]"),
        ("models:Detached", "{}", "forward failed in training mode on a batch of 3"),
        ("models:Exits", "{}", "could not be built with"),
    ],
)  # fmt: skip
def test_a_wrong_model_is_one_line_before_anything_is_written(
    tmp_path: Path, class_path: str, init_args: str, expected: str, main_cli
) -> None:
    recipe = project(tmp_path / "project", class_path, IMAGE, init_args)
    result = main_cli("fit", str(recipe), *FAST, cwd=tmp_path)
    line = one_error_line(result)
    assert expected in line, line
    assert not (tmp_path / "runs").exists()


def test_an_import_error_inside_the_module_is_its_own_message(tmp_path: Path, main_cli) -> None:
    recipe = project(tmp_path / "project", "needs_more:Net", IMAGE)
    (recipe.parent / "needs_more.py").write_text("import torch\nimport not_installed_anywhere\n")
    line = one_error_line(main_cli("fit", str(recipe), cwd=tmp_path))
    assert "cannot import 'needs_more': No module named 'not_installed_anywhere'" in line, line
    (recipe.parent / "needs_more.py").write_text("x = 1 / 0\n")
    sys.modules.pop("needs_more", None)
    line = one_error_line(main_cli("fit", str(recipe), cwd=tmp_path))
    assert "importing 'needs_more' failed: ZeroDivisionError: division by zero" in line and "needs_more.py:1" in line


def test_a_class_defined_in_a_notebook_trains_through_the_python_api(tmp_path: Path, monkeypatch) -> None:
    """In a notebook (or a script run as __main__), a class defined there is `__main__:Name`."""
    folder = tmp_path / "project"
    project(folder, *TASKS["image"])
    namespace: dict = {}
    exec(compile(MODELS, "notebook-cell", "exec"), namespace)  # the notebook's cell, as Jupyter runs it
    monkeypatch.setattr(sys.modules["__main__"], "NotebookCNN", namespace["TinyCNN"], raising=False)
    config = load_config(str(folder / "own.yaml"), ["model.class_path=__main__:NotebookCNN", *FAST,
                                                     f"run_dir={tmp_path / 'run'}"])  # fmt: skip
    summary = api.fit(config)
    assert summary["global_step"] == 6 and summary["val"]["val/acc"] > 0.2


def _digit_pngs(folder: Path, count: int = 4) -> list[Path]:
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    images = load_digits().images[:count]
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{index}.png"
        Image.fromarray((image * 255 / 16).round().astype("uint8"), mode="L").save(path)
        paths.append(path)
    return paths


def test_a_run_of_a_notebook_class_says_where_to_export_it(tmp_path: Path, monkeypatch, main_cli) -> None:
    """Outside the notebook, `__main__:Name` is gone: export and predict say so in one line."""
    folder = tmp_path / "project"
    project(folder, *TASKS["image"])
    namespace: dict = {}
    exec(compile(MODELS, "notebook-cell", "exec"), namespace)
    monkeypatch.setattr(sys.modules["__main__"], "NotebookCNN", namespace["TinyCNN"], raising=False)
    run = tmp_path / "run"
    api.fit(load_config(str(folder / "own.yaml"), ["model.class_path=__main__:NotebookCNN", *FAST, f"run_dir={run}"]))
    monkeypatch.delattr(sys.modules["__main__"], "NotebookCNN")
    for words in (("export", str(run)), ("predict", str(run), *map(str, _digit_pngs(tmp_path / "pngs")))):
        line = one_error_line(main_cli(*words))
        assert "was defined in a notebook or script" in line and "trainer.api" in line, line
