"""Shared fixtures: every test runs in its own directory, offline, with a per-session data cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real data sets (MNIST, IMDB, Tiny Shakespeare) in the hub's layout, beside the checkout.
SHARED_DATA = Path(os.environ.get("TRAINER_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
