"""Your own model, data and pretrained weights: the recipe settings that answer before torch is imported."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import one_error_line

from trainer.config import load_config
from trainer.errors import UserError

TEXT = "task: text_classification\ndata: {path: data.csv, tokenizer: {kind: char}}\ntrainer: {max_steps: 2}\n"


def _recipe(folder: Path, model: str, rest: str = TEXT) -> Path:
    path = folder / "own.yaml"
    path.write_text(f"# trainer fit own.yaml\nmodel: {model}\n{rest}")
    return path


def test_a_custom_model_is_found_beside_its_recipe_and_the_folder_is_recorded(tmp_path: Path) -> None:
    config = load_config(str(_recipe(tmp_path, "{family: custom, class_path: nets.tiny.Net, init_args: {width: 4}}")))
    assert config.model.class_path == "nets.tiny.Net"
    assert config.model.init_args == {"width": 4}
    assert config.model.import_path == str(tmp_path.resolve())  # recorded: resume and export import from there
    assert config.data.name is None  # data.path alone names the data


@pytest.mark.parametrize(
    ("class_path", "expected"),
    [
        ("os:system", "standard library's os module, which holds no model"),
        ("subprocess.Popen", "standard library's subprocess module"),
        ("builtins:eval", "standard library's builtins module"),
        ("pickle.loads", "standard library's pickle module"),
        ("socket:socket", "standard library's socket module"),
        ("venv.__main__:Net", "a package's __main__, which runs a program when imported"),
        ("unittest.__main__:Net", "a package's __main__"),
        ("my models:Net", "is not module:Class or module.Class"),
        ("Net", "is not module:Class or module.Class"),
    ],
)
def test_class_paths_that_are_never_models_are_refused_before_any_import(
    tmp_path: Path, class_path: str, expected: str, main_cli
) -> None:
    recipe = _recipe(tmp_path, f"{{family: custom, class_path: '{class_path}'}}")
    line = one_error_line(main_cli("config", str(recipe)))
    assert "model.class_path" in line and expected in line, line


@pytest.mark.parametrize(
    ("model", "rest", "expected"),
    [
        (
            "{family: huggingface, pretrained: ./bert}",
            "task: text_classification\ndata: {path: d.csv, tokenizer: {kind: bpe}}\ntrainer: {max_steps: 2}\n",
            "a pretrained model reads its own tokenizer's ids; drop data.tokenizer",
        ),
        (
            "{family: huggingface, pretrained: ./bert}",
            "task: image_classification\ndata: {path: imgs}\ntrainer: {max_steps: 2}\n",
            "cannot do task 'image_classification'",
        ),
        ("{family: cnn}", "task: image_classification\ntrainer: {max_steps: 2}\ndata: {}\n", "give data.path"),
        ("{family: cnn}", "task: image_classification\ndata: {path: x, image_size: [0, 3]}\n", "data.image_size"),
        ("{family: cnn}", "task: image_classification\ndata: {path: x, image_channels: 2}\n", "data.image_channels"),
        (
            "{family: custom, class_path: a:B, init_args: {1: 2}}",
            TEXT,
            "is not a name",
        ),
    ],
)
def test_settings_that_cannot_work_are_one_line(tmp_path: Path, model: str, rest: str, expected: str, main_cli) -> None:
    line = one_error_line(main_cli("config", str(_recipe(tmp_path, model, rest))))
    assert expected in line, line


def test_a_pretrained_model_brings_its_tokenizer_and_warm_start_excludes_resume(tmp_path: Path) -> None:
    config = load_config(str(_recipe(tmp_path, "{family: huggingface, pretrained: /models/bert}", TEXT.replace(
        ", tokenizer: {kind: char}", ""))))  # fmt: skip
    assert config.data.tokenizer.kind == "pretrained" and config.data.tokenizer.path == "/models/bert"
    with pytest.raises(UserError, match="init_from starts a new run from other weights"):
        load_config(str(_recipe(tmp_path, "{family: lstm}", TEXT)), ["init_from=runs/a", "resume=runs/b"])


def test_one_number_is_a_square_image_size(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "{family: cnn}", "task: image_classification\ndata: {path: x, image_size: 64}\n"
                     "trainer: {max_steps: 2}\n")  # fmt: skip
    assert load_config(str(recipe)).data.image_size == (64, 64)


def test_another_model_family_replaces_the_model_section_whole(tmp_path: Path) -> None:
    """A custom model on a shipped CNN recipe, by override or by inheritance: none of the CNN's keys carry over."""
    config = load_config("digits_cnn", ["model={family: custom, class_path: 'nets:Net', init_args: {width: 8}}"])
    assert config.model.family == "custom" and config.model.init_args == {"width": 8}
    child = tmp_path / "child.yaml"
    child.write_text("# trainer fit child.yaml\ninherits: digits_cnn\nmodel: {family: custom, class_path: nets:Net}\n")
    assert load_config(str(child)).model.class_path == "nets:Net"
    assert load_config("digits_cnn", ["model.channels=[4,8]"]).model.channels == [4, 8]  # same family: merged
