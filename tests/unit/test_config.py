"""Recipes, overrides and inheritance: every shipped recipe validates; the override grammar is YAML's."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import load_config, shipped_recipes
from trainer.config.load import recipes_dir
from trainer.errors import UserError

RECIPES = sorted(recipes_dir().rglob("*.yaml"))


def test_the_required_recipes_ship() -> None:
    required = {"digits_cnn", "mnist_cnn", "imdb_lstm", "imdb_transformer", "shakespeare_lstm", "shakespeare_gpt"}
    assert required <= set(shipped_recipes())


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_validates_and_opens_with_its_command(path: Path) -> None:
    config = load_config(str(path))
    assert config.name == path.stem
    assert config.description
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# trainer fit ") and path.stem in first_line


def test_overrides_are_parsed_as_yaml_scalars_and_lists() -> None:
    config = load_config(
        "mnist_cnn",
        [
            "optim.lr=3e-4",
            "trainer.max_epochs=2",
            "model.channels=[8,16,32]",
            "trainer.precision=bf16-mixed",
            "data.path=/tmp/x",
            "logger=[tensorboard,wandb]",
        ],
    )
    assert config.optim.lr == pytest.approx(3e-4)
    assert config.trainer.max_epochs == 2
    assert config.model.channels == [8, 16, 32]
    assert config.trainer.precision == "bf16-mixed"
    assert config.data.path == "/tmp/x"
    assert config.logger == ["csv", "tensorboard", "wandb"]


def test_a_value_that_looks_like_a_mapping_stays_literal() -> None:
    config = load_config("shakespeare_gpt", ["generate.prompt=ROMEO:"])
    assert config.generate.prompt == "ROMEO:"


def test_inheritance_changes_only_some_fields(tmp_path: Path) -> None:
    child = tmp_path / "small_gpt.yaml"
    child.write_text("# trainer fit small_gpt.yaml\ninherits: shakespeare_gpt\nmodel:\n  n_layers: 1\n")
    parent = load_config("shakespeare_gpt")
    config = load_config(str(child))
    assert config.model.n_layers == 1
    assert config.model.d_model == parent.model.d_model
    assert config.data == parent.data
    assert config.name == "small_gpt"


def test_inheritance_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("inherits: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inherits: a.yaml\n")
    with pytest.raises(UserError, match="loop"):
        load_config(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.chanels=[8]"], "unknown key 'model.chanels'; did you mean 'model.channels'?"),
        (["optim.lrr=1"], "did you mean 'optim.lr'?"),
        (["trainer.max_epochs=many"], "invalid value for 'trainer.max_epochs'"),
        (["optim.lr=-1"], "invalid value for 'optim.lr': Input should be greater than 0"),
        (["model.dropout=1.5"], "invalid value for 'model.dropout'"),
        (["trainer.precision=8"], "invalid value for 'trainer.precision'"),
        (["model.family=lstm"], "model.family 'lstm' cannot do task 'image_classification'; use one of: cnn, custom"),
        (["optim.lr"], "has no '='"),
        (["model.channels=[]"], "invalid value for 'model.channels'"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(overrides: list[str], expected: str) -> None:
    with pytest.raises(UserError) as err:
        load_config("mnist_cnn", overrides)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_channels_last_is_for_images() -> None:
    with pytest.raises(UserError, match="performance.channels_last is for images"):
        load_config("imdb_lstm", ["performance.channels_last=true"])
    assert load_config("mnist_cnn", ["performance.channels_last=true"]).performance.channels_last


def test_a_model_family_that_cannot_do_the_task_is_an_error(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: image_classification\nmodel: {family: lstm}\ndata: {name: x}\ntrainer: {max_steps: 1}\n")
    with pytest.raises(UserError, match="model.family 'lstm' cannot do task 'image_classification'"):
        load_config(str(recipe))


def test_a_section_level_error_names_the_section() -> None:
    with pytest.raises(UserError, match=r"invalid value for 'model': model.d_model \(64\) must be divisible"):
        load_config("shakespeare_gpt", ["model.d_model=64"])
