"""Which config a run starts from: the recipe plus overrides, or, for a run that exists, that run's own.

Pure Python (no torch): the CLI resolves and checks the config before it imports anything heavy, so
every config error answers in well under a second.

- `fit` without `resume=`: the recipe plus overrides.
- `fit resume=RUN`: the run's saved `config.yaml` plus the same overrides (`trainer.max_steps=...`
  extends it); the recipe named on the command line must be the run's.
- `test` / `generate` with a checkpoint inside a run directory: that run's config plus overrides, so
  its data path, tokenizer and sizes come along.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from trainer.cluster.env import job_identity, restart_count
from trainer.config import RunConfig, load_config, load_config_file, shipped_recipes, to_yaml
from trainer.config.load import compose
from trainer.errors import UserError
from trainer.lifecycle.run_dir import (
    CONFIG_FILE,
    check_new_run_dir,
    existing_checkpoint,
    find_resume_dir,
    run_dir_of,
    same_job,
)

# The words that say which run a command works on; the other overrides change that run's settings.
RUN_WORDS = ("resume", "ckpt", "run_dir", "overwrite")


def fit_config(recipe: str, overrides: list[str]) -> RunConfig:
    # A new run is the recipe with every override (a recipe may lack what an override gives, trainer.max_steps);
    # a resumed one is its own config.yaml with them, the recipe named only to check it is the same.
    if compose(recipe, _run_words(overrides)).get("resume") is None:
        cfg = load_config(recipe, overrides)
        if cfg.ckpt is not None:
            raise UserError("ckpt= is for test and generate; to continue a run use resume=RUN_DIR")
        run_dir = Path(cfg.run_dir).expanduser() if cfg.run_dir else None
        # Checked again where the run starts (trainer.lifecycle.start); here, before anything is imported.
        if run_dir is not None and not (restart_count() > 0 and same_job(run_dir, job_identity())):
            check_new_run_dir(run_dir, cfg.overwrite)
        return cfg
    named = load_config(recipe, _run_words(overrides))  # the recipe as named, and which run
    if named.overwrite:
        raise UserError("resume= continues a run and overwrite=true replaces one; drop one of them")
    run_dir = find_resume_dir(named.resume, named.name or recipe)
    given_dir = named.run_dir if _given(overrides, "run_dir") else None
    if given_dir is not None and Path(given_dir).resolve() != run_dir.resolve():
        raise UserError(f"resume= continues the run in its own directory ({run_dir}); drop run_dir=")
    if _given(overrides, "init_from"):
        raise UserError("init_from starts a new run from other weights; resume continues this one: give one")
    # The overrides apply to the run's own settings (and are checked against them, not the recipe's). A run
    # that began as a warm start keeps `init_from` as the record of where its first weights came from; the
    # weights it goes on from are its checkpoint's.
    words = [*overrides, f"resume={run_dir}", f"run_dir={run_dir}"]
    warm_started_from = compose(str(run_dir / CONFIG_FILE), []).get("init_from")
    saved = load_config_file(run_dir / CONFIG_FILE, [*words, "init_from=null"] if warm_started_from else words)
    if warm_started_from:
        saved = saved.model_copy(update={"init_from": str(warm_started_from)})
    _check_same_recipe(saved, named, f"resume={named.resume}", run_dir, f"resume={run_dir}")
    if saved.ckpt is not None:
        checkpoint = Path(saved.ckpt).expanduser()
        if run_dir_of(checkpoint) is None or run_dir_of(checkpoint) != run_dir.resolve():
            raise UserError(f"ckpt={saved.ckpt!r} is not a checkpoint of run {str(run_dir)!r}; give one from its "
                            f"{run_dir / 'checkpoints'} folder")  # fmt: skip
    return saved


def eval_config(recipe: str, overrides: list[str], command: str) -> RunConfig:
    """The config of `trainer test` / `trainer generate`: the checkpoint's run, when it sits in one."""
    named = load_config(recipe, _run_words(overrides))
    if command == "generate" and named.task != "language_modeling":
        raise UserError(f"`trainer generate` needs a language-modelling recipe; {named.name!r} does {named.task}")
    checkpoint = existing_checkpoint(named.ckpt, command)
    run_dir = run_dir_of(checkpoint)
    if run_dir is None:
        return load_config(recipe, overrides)
    saved = load_config_file(run_dir / CONFIG_FILE, overrides)
    _check_same_recipe(saved, named, f"checkpoint {named.ckpt!r}", run_dir, f"ckpt={named.ckpt}", command)
    return saved


def recipe_word(name: str | None, run_dir: Path) -> str:
    """What names a run's recipe on a command line: its shipped name, else the run's own config.yaml (a
    recipe file's name alone does not find the file)."""
    return name if name in shipped_recipes() else str(run_dir / CONFIG_FILE)


def resume_command(name: str | None, run_dir: Path) -> str:
    """The exact command that continues a run, quoted for a shell."""
    return shlex.join(["trainer", "fit", recipe_word(name, run_dir), f"resume={run_dir}"])


def slurm_resume_command(name: str | None, run_dir: Path) -> str:
    """What continues a SLURM job's run as a new job, in its run directory (the resources are the user's)."""
    return shlex.join(["trainer", "slurm", recipe_word(name, run_dir), f"resume={run_dir}"])


def _check_same_recipe(
    saved: RunConfig, asked: RunConfig, what: str, run_dir: Path, words: str, command: str = "fit"
) -> None:
    if saved.name != asked.name:
        fixed = shlex.join(["trainer", command, recipe_word(saved.name, run_dir), words])
        raise UserError(f"{what} belongs to a run of recipe {saved.name!r}, not {asked.name!r}; run `{fixed}`")


def _run_words(overrides: list[str]) -> list[str]:
    return [word for word in overrides if word.partition("=")[0] in RUN_WORDS]


def _given(overrides: list[str], key: str) -> bool:
    return any(word.partition("=")[0] == key for word in overrides)


def run_yaml(cfg: RunConfig, run_dir: Path) -> str:
    """The config.yaml a run directory keeps: complete (no `inherits:` to follow again, whose relative path
    would not resolve from the run directory) and free of the words that started this session."""
    return to_yaml(cfg.model_copy(update={"inherits": None, "resume": None, "ckpt": None, "overwrite": False,
                                          "run_dir": str(run_dir)}))  # fmt: skip
