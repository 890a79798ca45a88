"""Bad input that answers before torch is imported: one line naming the problem and the fix, exit status 2,
no traceback, nothing written. Run in this process through the CLI's own entry point (`trainer.cli.main`);
test_bad_input.py keeps the end-to-end cases through the console script, and the checks that need torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import one_error_line


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["fit", "mnist_cnn", "model.chanels=[8]"], "did you mean 'model.channels'"),
        (["fit", "mnist_cnn", "trainer.max_epochs=lots"], "invalid value for 'trainer.max_epochs'"),
        (["fit", "mnist_cnn", "optim.lr=-3"], "invalid value for 'optim.lr'"),
        (["fit", "mnist_cnn", "optim.lr"], "write overrides as key.path=value"),
        (["fit", "mnist_cnnn"], "no recipe named 'mnist_cnnn'; did you mean 'mnist_cnn'?"),
        (["fit", "missing/recipe.yaml"], "does not exist"),
        (["test", "mnist_cnn"], "needs a checkpoint"),
        (["test", "mnist_cnn", "ckpt=/no/such.ckpt"], "checkpoint '/no/such.ckpt' does not exist"),
        (["generate", "mnist_cnn", "ckpt=x.ckpt"], "needs a language-modelling recipe"),
        (["fit", "mnist_cnn", "resume=/no/run"], "no checkpoints/last.ckpt there"),
        (["frobnicate"], "invalid choice"),
        (["fit", "mnist_cnn", "name=../../../x"], "a recipe name is a folder name under runs/, not a path"),
        (["fit", "mnist_cnn", "name=.hidden"], "a recipe name is a folder name under runs/, not a path"),
        (["fit", "mnist_cnn", "name=" + "é" * 100], "at most 128 bytes"),  # 100 characters, 200 bytes
        (["fit", "mnist_cnn", "data.path=\udcff"], "is not UTF-8 text"),  # the byte 0xff, as Python keeps it
    ],
)
def test_bad_input_is_one_line_and_exit_2(main_cli, tmp_path: Path, words: list[str], expected: str) -> None:
    line = one_error_line(main_cli(*words))
    assert expected in line
    assert not (tmp_path / "runs").exists()


def test_invalid_yaml_names_the_line(main_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("task: image_classification\nmodel:\n  family: cnn\n channels: [1\n")
    line = one_error_line(main_cli("config", str(recipe)))
    assert "invalid YAML" in line and "line" in line


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["optim.lr=inf"], "invalid value for 'optim.lr': Input should be a finite number"),
        (["optim.lr=1e400"], "invalid value for 'optim.lr': Input should be a finite number"),
        (["seed=-1"], "invalid value for 'seed'"),
        (["seed=99999999999999999999"], "invalid value for 'seed'"),
        (["checkpoint.monitor=val/ppl"], "checkpoint.monitor='val/ppl' is not a metric task"),
        (["trainer.devices=[0,0]"], "a device index appears twice"),
        (["trainer.devices=0"], "give 1 or more devices"),
        (["trainer.limit_train_batches=0"], "invalid value for 'trainer.limit_train_batches'"),
        (["trainer.limit_val_batches=0"], "turns validation off"),
        (["trainer.max_epochs=0"], "trains nothing"),
        (["trainer.num_nodes=2"], "needs one torchrun per node"),
        (["model.channels=[1,2"], "cannot parse the value of override 'model.channels=[1,2'"),
        (["model.channels=" + "[" * 5000 + "]" * 5000], "nested too deeply"),
        ([".".join(["a"] * 3000) + "=1"], "unknown key"),
        (["data.path=${oc.env:HOME}"], "calls a resolver"),
    ],
)
def test_settings_that_can_never_work_are_config_errors_before_any_import(main_cli, tmp_path, words, expected) -> None:
    result = main_cli("fit", "digits_cnn", *words)
    assert expected in one_error_line(result)
    assert not (tmp_path / "runs").exists()


def test_recipe_files_that_are_not_recipes_are_one_line(main_cli, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("description: caf\xe9\n".encode("latin-1"))
    assert "is not UTF-8 text" in one_error_line(main_cli("config", str(latin1)))
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    assert "nested too deeply" in one_error_line(main_cli("config", str(deep)))
    huge = tmp_path / "huge.yaml"
    huge.write_text("description: " + "x" * (38 * 2**20) + "\n")  # parsed, it took minutes; refused at once
    assert "recipe" in one_error_line(main_cli("config", str(huge))) and "38.0 MiB" in one_error_line(
        main_cli("fit", str(huge))
    )


def test_an_override_given_twice_takes_the_last(main_cli) -> None:
    result = main_cli("config", "digits_cnn", "optim.lr=0.1", "optim.lr=0.2")
    assert result.returncode == 0 and "lr: 0.2" in result.stdout


@pytest.mark.parametrize(
    ("recipe_text", "expected"),
    [
        ("inherits: ${oc.env:FAKE_SECRET}\n", "calls a resolver"),
        ("inherits: digits_cnn\nname: ${nonexistent}\n", "cannot resolve the recipe"),
        ("inherits: digits_cnn\ndescription: ${name}\nname: ${description}\n", "cannot resolve the recipe"),
        ("inherits: digits_cnn\n~: 2\n", "is not a recipe"),
        ("inherits: digits_cnn\n1: x\n", "is not a name"),
    ],
)
def test_recipes_that_interpolate_badly_are_one_line_and_leak_nothing(
    main_cli, tmp_path, recipe_text, expected
) -> None:
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(recipe_text)
    result = main_cli("config", str(recipe), env={"FAKE_SECRET": "sk-not-to-be-seen"})
    assert expected in one_error_line(result)
    assert "sk-not-to-be-seen" not in result.stderr + result.stdout


def test_an_override_may_refer_to_another_key(main_cli) -> None:
    result = main_cli("config", "shakespeare_gpt", "model.d_model=64", "model.n_heads=4", "model.d_ff=${model.d_model}")
    assert result.returncode == 0, result.stderr
    assert "d_ff: 64" in result.stdout


@pytest.mark.parametrize("command", ["recipe", "device recipe", "model folder", "report", "runs"])
def test_a_fifo_or_device_given_as_a_file_is_named_for_what_it_is(main_cli, tmp_path: Path, command: str) -> None:
    """Opened, a FIFO would block forever and /dev/zero never end: neither is read, on any command."""
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    export = tmp_path / "export"
    export.mkdir()
    os.mkfifo(export / "manifest.json")
    words, expected = {
        "recipe": (["fit", str(fifo)], f"recipe '{fifo}' is a FIFO (named pipe), not a file"),
        "device recipe": (["config", "/dev/zero"], "recipe '/dev/zero' is a character device, not a file"),
        "model folder": (["predict", str(export), "x"], "manifest.json' is a FIFO (named pipe), not a file"),
        "report": (["report", str(export.parent)], "summary.json"),
        "runs": (["runs", "--root", str(tmp_path / "runs")], None),
    }[command]
    if command in ("report", "runs"):
        os.mkfifo(tmp_path / "summary.json")
    if command == "runs":  # a run among others whose summary.json is a FIFO: listed as unfinished, never read
        run = tmp_path / "runs" / "digits_cnn" / "a"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("name: digits_cnn\n")
        os.mkfifo(run / "summary.json")
        result = main_cli(*words)
        assert result.returncode == 0 and "digits_cnn/a  failed" in result.stdout, result.stderr
        return
    assert expected in one_error_line(main_cli(*words))


@pytest.mark.parametrize(
    ("address", "kind"),
    [("0.0.0.0", "the unspecified address"), ("::", "the unspecified address"), ("::ffff:127.0.0.1", "loopback"),
     ("127.0.1.1", "loopback"), ("localhost", "loopback"), ("::1", "loopback"), ("169.254.3.4", "link-local"),
     ("fe80::1", "link-local"), ("::127.0.0.1", "loopback"), ("64:ff9b::127.0.0.1", "loopback"),
     ("::ffff:0:127.0.0.1", "loopback"), ("224.0.0.1", "multicast or broadcast"),
     ("255.255.255.255", "multicast or broadcast")],
)  # fmt: skip
def test_nodecheck_refuses_every_head_address_that_leads_a_node_to_itself(main_cli, address: str, kind: str) -> None:
    skip_own_hostname = {"GLOO_SOCKET_IFNAME": "eth0"}  # this machine's hostname is not the question here
    line = one_error_line(main_cli("nodecheck", address, "--nnodes", "2", env=skip_own_hostname))
    assert f"({kind})" in line and "set MASTER_ADDR" in line
    # One node dials itself by design; a routable address passes across nodes.
    assert main_cli("nodecheck", address, env=skip_own_hostname).returncode == 0
    assert main_cli("nodecheck", "10.1.2.3", "--nnodes", "2", env=skip_own_hostname).returncode == 0


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--gpu-memory", "1PB"], "'1PB' is not a size"),
        (["--gpu-memory", "99999TB"], "is not the memory of one GPU"),
        (["--nodes", "-3"], "'-3' is not a count of 1 or more"),
        (["--gpus-per-node", "0"], "'0' is not a count of 1 or more"),
        (["--nodes", "3", "--gpus-per-node", "8"], "does not divide over 24 processes"),
        (["--nodes", "\uff12"], "is not a count of 1 or more"),  # a full-width 2: int() would read it
        (["--nodes", "999999999999999999999"], "is not a count of 1 or more"),
        (["--head-node", "a;rm -rf ~"], "is not a host name or IP address"),
        (["--head-node", "::1", "--nodes", "2"], "--head-node [::1] is loopback, which no other node reaches"),
    ],
)
def test_plan_options_are_checked_before_torch_is_imported(main_cli, options: list[str], expected: str) -> None:
    torch_before = "torch" in sys.modules
    assert expected in one_error_line(main_cli("plan", "shakespeare_gpt", *options))
    assert torch_before or "torch" not in sys.modules
