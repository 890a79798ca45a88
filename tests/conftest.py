"""Shared fixtures: every test runs in its own directory, offline, with a per-session data cache.

The tiers (unit, integration, distributed, cluster, slow), their timeouts and the unit tier's guard are in
tests/tiers.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tiers", "pytester"]
# Before any test module imports datasets or huggingface_hub: both read these once, at import, and a hub
# name would otherwise wait on network timeouts (the `isolated` fixture sets them again for every test).
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

REPO = Path(__file__).resolve().parents[1]
# Real data sets (MNIST, IMDB, Tiny Shakespeare) in the hub's layout, beside the checkout.
SHARED_DATA = Path(os.environ.get("TRAINER_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any("gpu" in item.keywords for item in items):
        return  # torch stays unimported for the unit tier alone
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (runs/ lands there), never reach a hub, keep caches out of the home directory."""
    monkeypatch.chdir(tmp_path)
    for name, value in offline_environment(tmp_path, session_cache).items():
        monkeypatch.setenv(name, value)
    return tmp_path


def offline_environment(folder: Path, session_cache: Path) -> dict[str, str]:
    """What every test's runs see: no hub, offline W&B writing under `folder`, the session's caches."""
    return {
        "TRAINER_CACHE": str(session_cache / "trainer"),
        "HF_DATASETS_CACHE": str(session_cache / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(folder),
        "WANDB_SILENT": "true",
    }


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data missing at {SHARED_DATA}; set TRAINER_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_imdb(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A balanced, shuffled slice of real IMDB reviews in the hub's layout (train 512, test 128)."""
    import datasets

    folder = tmp_path_factory.mktemp("imdb_small")
    full = datasets.load_dataset(str(shared_data / "imdb"))
    for split, size in (("train", 512), ("test", 128)):
        full[split].shuffle(seed=0).select(range(size)).to_parquet(str(folder / f"{split}.parquet"))
    return folder


@pytest.fixture(scope="session")
def small_shakespeare(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40,000 characters of Tiny Shakespeare, as a folder holding one text file."""
    folder = tmp_path_factory.mktemp("shakespeare_small")
    text = (shared_data / "tiny_shakespeare" / "input.txt").read_text()
    (folder / "input.txt").write_text(text[:40_000])
    return folder


def run_cli(*words: str, cwd: Path | None = None, env: dict[str, str | None] | None = None):
    """The installed entry point, as a user runs it (`python -m trainer` is the same code).

    `env` adds variables to this process's environment; a value of None removes one.
    """
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *words],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={k: v for k, v in environment.items() if v is not None},
        timeout=600,
    )


@pytest.fixture
def cli():
    return run_cli


def run_main(*words: str, cwd: Path | None = None, env: dict[str, str | None] | None = None):
    """`trainer WORDS...` in this process, through the CLI's own entry point (`trainer.cli.main`): what
    `run_cli` returns, without paying for a fresh interpreter (and its imports) for every command.

    What a fresh interpreter would print comes back on the result: warnings as Python shows them, and what
    libraries log through handlers made when they were imported (Lightning's INFO lines). The environment,
    the working directory and the random number generators are restored afterwards. `env` changes what the
    command reads while it runs, not what a library read once at import (torch's CXX, OMP_NUM_THREADS):
    that, signals, `kill -9`, concurrent processes and the console script itself need `run_cli`.
    """
    from trainer.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        _environment(env),
        _working_directory(cwd),
        _random_state_restored(),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        _library_logs_to(stderr),
        _warnings_as_a_fresh_interpreter_shows_them(),
    ):
        try:
            status = main(list(words))
        except SystemExit as stop:  # argparse's --help
            status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return subprocess.CompletedProcess(["trainer", *words], status, stdout.getvalue(), stderr.getvalue())


@contextlib.contextmanager
def _library_logs_to(stream: io.StringIO) -> Iterator[None]:
    """Every logging.StreamHandler a library made (Lightning's, at its import) writes to `stream` meanwhile:
    it holds the sys.stderr of the moment it was made, which in a test session is not this command's."""
    handlers = [
        handler
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for handler in getattr(logger, "handlers", ())
        if type(handler) is logging.StreamHandler  # not files, not pytest's capture (subclasses)
    ]
    before = [handler.stream for handler in handlers]
    for handler in handlers:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler, old in zip(handlers, before, strict=True):
            handler.setStream(old)


@contextlib.contextmanager
def _random_state_restored() -> Iterator[None]:
    """A run seeds Python's, numpy's and torch's global generators; the next test finds them as they were."""
    saved = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy else None
    torch = sys.modules.get("torch")
    torch_state = torch.random.get_rng_state() if torch else None
    try:
        yield
    finally:
        random.setstate(saved)
        if numpy_state is not None:
            numpy.random.set_state(numpy_state)
        if torch_state is not None:
            torch.random.set_rng_state(torch_state)


@contextlib.contextmanager
def _warnings_as_a_fresh_interpreter_shows_them() -> Iterator[None]:
    """Python's default filters (not pytest's, which records warnings instead of printing them), printed to
    sys.stderr as they are raised."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = _show_on_stderr
        yield


def _show_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _working_directory(folder: Path | None) -> Iterator[None]:
    """contextlib.chdir, which Python 3.10 lacks."""
    before = Path.cwd()
    os.chdir(folder or before)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _environment(changes: dict[str, str | None] | None) -> Iterator[None]:
    """os.environ with `changes` (None: a variable removed), restored whole afterwards: a command may set
    variables of its own (Lightning's seed, for one)."""
    saved = dict(os.environ)
    for name, value in (changes or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def main_cli():
    return run_main


@pytest.fixture(scope="session")
def straight_runs(tmp_path_factory: pytest.TempPathFactory):
    """The summary of an uninterrupted tiny-GPT run (tests/tiny_gpt.py), trained once per set of words for every
    test it is the reference of."""
    from tiny_gpt import fit_tiny_gpt

    done: dict[tuple[str, ...], dict] = {}

    def straight(data: Path, *words: str) -> dict:
        if words not in done:
            done[words] = fit_tiny_gpt(run_cli, data, *words, f"run_dir={tmp_path_factory.mktemp('straight') / 'run'}")
        return done[words]

    return straight
