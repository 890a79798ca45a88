"""The typed schema of a recipe: one `RunConfig` validates a whole run.

Pure pydantic, no torch import, so that `trainer config` and every config error answer fast.
Every model forbids unknown keys; `trainer.config.load` turns pydantic's errors into one line
that names the key and suggests the closest valid one.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator, model_validator

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# A number of batches (an int) or a fraction of them (a float in (0, 1]), as Lightning's Trainer takes them.
BatchCount = Annotated[int, Field(gt=0, strict=True)] | Annotated[float, Field(gt=0, le=1)]


class Section(BaseModel):
    # No inf or NaN in any number: `optim.lr=inf` (or 1e400, which YAML reads as inf) can never train.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- models


class CNNConfig(Section):
    """Convolutional image classifier: stages of conv-BN-ReLU blocks, each stage halving the image."""

    family: Literal["cnn"] = "cnn"
    channels: list[PositiveInt] = Field(default=[32, 64], min_length=1, description="Output channels per stage.")
    convs_per_stage: PositiveInt = Field(default=2, description="3x3 convolutions in each stage.")
    batch_norm: bool = True
    dropout: Fraction = 0.1
    hidden_dim: PositiveInt = Field(default=128, description="Width of the hidden layer of the classifier head.")


class LSTMConfig(Section):
    """LSTM (cuDNN's nn.LSTM): a sequence classifier over packed padding, or a language model."""

    family: Literal["lstm"] = "lstm"
    embed_dim: PositiveInt = 128
    hidden_size: PositiveInt = 256
    num_layers: PositiveInt = 1
    dropout: Fraction = 0.0
    bidirectional: bool = Field(default=False, description="Classifier only; a language model reads left to right.")
    pooling: Literal["last", "mean", "max"] = Field(
        default="max", description="Classifier: final state, or outputs pooled over the real tokens."
    )


class TransformerConfig(Section):
    """Pre-norm Transformer: an encoder classifier with a padding mask, or a decoder-only causal LM."""

    family: Literal["transformer"] = "transformer"
    d_model: PositiveInt = 128
    n_heads: PositiveInt = 4
    n_layers: PositiveInt = 2
    d_ff: PositiveInt | None = Field(default=None, description="Feed-forward width; default 4 * d_model.")
    dropout: Fraction = 0.1
    tie_weights: bool = Field(default=True, description="Language model: share input embedding and output head.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        return self


# Standard-library modules that hold no model and whose import or call acts on the machine (processes, files,
# pickles, the network, the interpreter): a class_path naming one is refused before anything is imported.
NEVER_MODELS = frozenset({
    "builtins", "os", "sys", "subprocess", "shutil", "pathlib", "io", "pickle", "marshal", "shelve", "dbm", "copyreg",
    "socket", "socketserver", "ssl", "http", "urllib", "ftplib", "smtplib", "poplib", "imaplib", "xmlrpc",
    "webbrowser", "multiprocessing", "concurrent", "threading", "signal", "asyncio", "select", "selectors", "pty",
    "tempfile", "glob", "runpy", "code", "codeop", "importlib", "ctypes", "posix", "nt", "fcntl", "resource", "mmap",
    "zipfile", "tarfile", "sqlite3", "gc", "inspect", "platform", "pdb", "atexit", "unittest", "lib2to3", "this",
    "antigravity", "venv", "ensurepip", "pip", "idlelib", "turtledemo", "doctest", "pydoc", "trace", "cProfile",
    "profile", "timeit", "zipapp", "compileall", "py_compile",
})  # fmt: skip
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*([:.][A-Za-z_]\w*)")


class CustomModelConfig(Section):
    """Your own `nn.Module`, named by import path and built with `init_args` plus the facts of the data that its
    constructor names (see the README's "Your own model"). Naming a class runs its module's code."""

    family: Literal["custom"] = "custom"
    class_path: str = Field(description="module:Class or module.Class, e.g. my_models.resnet:TinyResNet.")
    init_args: dict[str, Any] = Field(default={}, description="Constructor arguments beyond the data's facts.")
    import_path: str | None = Field(
        default=None,
        description="Folder searched first for class_path's module (then the working directory); default: the "
        "recipe's folder, recorded in the run's config.yaml.",
    )

    @field_validator("class_path")
    @classmethod
    def _class_path(cls, value: str) -> str:
        if not _CLASS_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not module:Class or module.Class (e.g. my_models.resnet:TinyResNet)")
        if ".__main__" in value.replace(":", "."):
            raise ValueError(f"{value!r} is a package's __main__, which runs a program when imported; name your "
                             "own nn.Module class")  # fmt: skip
        if value.replace(":", ".").split(".")[0] in NEVER_MODELS:
            raise ValueError(f"{value!r} is in the standard library's {value.split('.')[0].split(':')[0]} module, "
                             "which holds no model; name your own nn.Module class")  # fmt: skip
        return value

    @field_validator("init_args", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        # `model.init_args=null` drops what a parent recipe gave (an override of {} merges into it).
        return {} if value is None else value

    @field_validator("init_args")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not (isinstance(name, str) and name.isidentifier()):
                raise ValueError(f"{name!r} is not an argument name")
        return value


class HuggingFaceConfig(Section):
    """A Hugging Face Transformers model fine-tuned from pretrained weights: an encoder with a classification head
    sized from the data (text classification), or a causal LM (language modelling), with the folder's tokenizer."""

    family: Literal["huggingface"] = "huggingface"
    pretrained: str = Field(
        description="A local folder (config.json, weights, tokenizer files) or a hub name such as "
        "google-bert/bert-base-uncased (hub names need the network and local_files_only=false)."
    )
    local_files_only: bool = Field(default=True, description="Offline: never reach the hub.")


ModelConfig = Annotated[
    CNNConfig | LSTMConfig | TransformerConfig | CustomModelConfig | HuggingFaceConfig, Field(discriminator="family")
]


# ----------------------------------------------------------------------------- data


class TokenizerConfig(Section):
    """A tokenizer trained with the `tokenizers` library on the training split, or a pretrained one from a folder."""

    kind: Literal["bpe", "wordpiece", "char", "pretrained"] = "bpe"
    vocab_size: PositiveInt = Field(default=8000, description="Ignored for `char` (the alphabet decides).")
    lowercase: bool = True
    path: str | None = Field(
        default=None,
        description="kind=pretrained: a folder with tokenizer.json (or a hub name); set for you by "
        "model.family=huggingface.",
    )
    local_files_only: bool = Field(default=True, description="kind=pretrained: never reach the hub.")


class DataConfig(Section):
    """Where the data come from and how they are batched.

    `name` is a Hugging Face hub name; `path` a local file or folder (csv, json, jsonl, parquet, txt, or an
    image folder with a subfolder per class), used instead of `name` when set. `sklearn:digits` names the
    digits set that scikit-learn ships.
    """

    name: str | None = Field(
        default=None, description="Hub name (ylecun/mnist, stanfordnlp/imdb, ...) or sklearn:digits; or give path."
    )
    path: str | None = Field(default=None, description="Local file or folder; wins over name.")
    train_split: str = "train"
    val_split: str | None = Field(default=None, description="None: use the data set's validation split if it has one.")
    test_split: str | None = Field(default="test", description="Evaluated at the end of fit when present.")
    val_fraction: Fraction = Field(default=0.1, description="Seeded fraction of train held out when no val split.")
    max_train_samples: PositiveInt | None = Field(default=None, description="Seeded random subset of train.")
    max_eval_samples: PositiveInt | None = Field(default=None, description="Seeded random subset of val and test.")

    image_column: str = "image"
    text_column: str = "text"
    label_column: str = "label"
    normalize_mean: float = 0.5
    normalize_std: Annotated[float, Field(gt=0)] = 0.5
    image_size: tuple[Annotated[int, Field(gt=0, le=8192)], Annotated[int, Field(gt=0, le=8192)]] | None = Field(
        default=None,
        description="Images: [height, width] every image is resized to (bilinear), in training and in predict. "
        "None: as the images are, which must then share one size.",
    )
    image_channels: Literal[1, 3] | None = Field(
        default=None, description="Images: 1 (greyscale) or 3 (RGB) to convert every image to; None: as they are."
    )

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: object) -> object:
        # `data.image_size=64` means 64 x 64.
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _somewhere(self) -> DataConfig:
        if self.name is None and self.path is None:
            raise ValueError("give data.path (a local file or folder) or data.name (a hub data set)")
        return self

    tokenizer: TokenizerConfig | None = None
    max_length: PositiveInt = Field(default=256, description="Text classification: tokens kept per example.")
    block_size: PositiveInt = Field(default=128, description="Language modelling: tokens per packed block.")

    global_batch_size: PositiveInt = Field(default=64, description="Samples per optimizer step, over all ranks.")
    micro_batch_size: PositiveInt | None = Field(
        default=None, description="Samples per forward pass on one rank; default global_batch_size / world size."
    )
    in_memory: bool | None = Field(
        default=None,
        description="Images: decode each split once into memory (cached) instead of at every batch. "
        "None: when the decoded images fit in 2 GiB and share one size.",
    )
    num_workers: NonNegativeInt = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    cache_dir: str | None = Field(
        default=None, description="Tokenizer and tokenised-data cache; default ~/.cache/trainer."
    )


# ----------------------------------------------------------------------------- optimisation


class OptimConfig(Section):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    fused: bool | None = Field(
        default=None,
        description="torch's fused optimizer kernels: one kernel per step, and a step with non-finite gradients is "
        "skipped on the device, with no host sync. None: fused except under DeepSpeed, which steps its own way.",
    )


class PerformanceConfig(Section):
    """Speed settings: none changes what is learned beyond floating-point rounding."""

    compile: bool = Field(
        default=False, description="torch.compile the model, in place (checkpoints keep their keys). Slow to start."
    )
    channels_last: bool = Field(
        default=False, description="CNN: NHWC memory layout, which tensor-core GPUs convolve fastest."
    )
    float32_matmul_precision: Literal["highest", "high", "medium"] = Field(
        default="highest", description="torch.set_float32_matmul_precision; 'high' lets float32 matmuls use TF32."
    )
    reuse_host_memory: bool = Field(
        default=True,
        description="Linux/glibc: freed host memory stays in the process (no trimming, no mmap under 1 GiB), "
        "so CPU steps reuse pages instead of faulting in zeroed ones. The process keeps its peak heap.",
    )


class SchedulerConfig(Section):
    name: Literal["none", "cosine", "linear"] = "none"
    warmup_steps: NonNegativeInt = 0
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0


# ----------------------------------------------------------------------------- Lightning Trainer


def explicit_device_count(devices: int | str | list[int]) -> int | None:
    """The devices per node a recipe names; None for `auto` (or -1): the machine or the launcher decides.
    `devices` as TrainerConfig validated it: an int, a list of indices or "auto"."""
    if isinstance(devices, list):
        return len(devices)
    return None if devices in ("auto", -1) else int(devices)


class TrainerConfig(Section):
    """Arguments of Lightning's `Trainer`, with Lightning's names and values.

    Gradient accumulation is not here: it follows from `data.global_batch_size`,
    `data.micro_batch_size` and the world size.
    """

    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int | str | list[int] = Field(
        default="auto",
        description="Per node; auto: every local GPU, or one CPU process. Under torchrun: must match it.",
    )
    num_nodes: PositiveInt = Field(default=1, description="Under torchrun: taken from the launcher.")

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: int | str | list[int]) -> int | str | list[int]:
        # `trainer.devices=2` may arrive as text; anything but a count, a list or "auto" is an error here.
        if isinstance(value, str) and value != "auto":
            try:
                value = int(value)
            except ValueError:
                raise ValueError("give a number of devices, a list of device indices, or auto") from None
        if isinstance(value, int) and value < 1 and value != -1:
            raise ValueError("give 1 or more devices, -1 or auto for all of them")
        if isinstance(value, list):
            if not value or any(index < 0 for index in value):
                raise ValueError("give device indices 0, 1, ... (at least one)")
            if len(set(value)) != len(value):
                raise ValueError("a device index appears twice; each process needs a device of its own")
        return value

    strategy: Literal[
        "auto",
        "ddp",
        "deepspeed_stage_1",
        "deepspeed_stage_2",
        "deepspeed_stage_2_offload",
        "deepspeed_stage_3",
        "deepspeed_stage_3_offload",
        "fsdp",
        "fsdp_shard_grad_op",
        "fsdp_cpu_offload",
    ] = "auto"
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"] = "32"
    max_epochs: int | None = Field(default=None, ge=-1, description="-1: no limit (then set max_steps).")
    max_steps: int = Field(default=-1, ge=-1, description="-1: no limit (then set max_epochs).")
    gradient_clip_val: Annotated[float, Field(ge=0)] | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    log_every_n_steps: PositiveInt = 50
    # Lightning's meaning: an int counts batches, a float is a fraction of an epoch (at most 1).
    val_check_interval: BatchCount | None = None
    check_val_every_n_epoch: PositiveInt | None = 1
    limit_train_batches: BatchCount | None = None
    limit_val_batches: BatchCount | Literal[0] | None = None
    limit_test_batches: BatchCount | None = None
    num_sanity_val_steps: int | None = Field(default=0, ge=-1)
    deterministic: bool | Literal["warn"] | None = None
    benchmark: bool | None = None
    enable_progress_bar: bool = True

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: object) -> object:
        # YAML reads `precision: 32` as an int; Lightning's names are strings.
        return str(value) if isinstance(value, int) else value


# ----------------------------------------------------------------------------- run


class CheckpointConfig(Section):
    monitor: str = Field(default="val/loss", description="Metric that ranks the best checkpoints.")
    mode: Literal["min", "max"] = "min"
    save_top_k: int = Field(default=1, ge=-1, description="Best checkpoints kept by `monitor` (-1: all).")
    every_n_train_steps: PositiveInt | None = Field(
        default=None, description="Also write last.ckpt every N optimizer steps (it is always written at the end)."
    )


class DeepSpeedSection(Section):
    """DeepSpeed beyond what `trainer.strategy` names. Precision, gradient accumulation, clipping and the
    micro batch come from the recipe; anything else goes in `config`, validated against DeepSpeed."""

    config: str | dict[str, Any] | None = Field(
        default=None, description="A DeepSpeed JSON file or an inline mapping (unknown keys are errors)."
    )
    offload_optimizer: bool | None = Field(default=None, description="Override the strategy's optimizer offload.")
    offload_parameters: bool | None = Field(default=None, description="ZeRO-3: also offload parameters.")


class FSDPSection(Section):
    """FSDP2 beyond what `trainer.strategy` names (fsdp, fsdp_shard_grad_op, fsdp_cpu_offload)."""

    block_class: list[str] | None = Field(
        default=None,
        description="Class names of the model's blocks, each sharded as one unit before the root (e.g. BertLayer). "
        "None: a Transformers model's own list, else the members of every nn.ModuleList, else the root's children.",
    )
    cpu_offload: bool | None = Field(default=None, description="Override the strategy's CPU offload (GPU only).")

    @field_validator("block_class", mode="before")
    @classmethod
    def _one_name(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class WandbConfig(Section):
    """Weights & Biases. The API key is read by wandb from its own environment; it never enters a config."""

    project: str = "trainer"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = Field(
        default=None, description="None: WANDB_MODE from the environment, else online."
    )
    tags: list[str] = []


class SlurmConfig(Section):
    """What a SLURM job does when a signal stops it: after the checkpoint, it requeues itself
    (`scontrol requeue`) and the requeued job resumes on its own.

    USR1 is the warning before the time limit that slurm/train.sbatch asks for. SIGTERM comes on
    preemption, at the time limit and from `scancel` alike, and SLURM does not say which: by default it
    only saves (SLURM requeues preempted jobs itself under PreemptMode=REQUEUE; a cancelled job stays
    cancelled). Add SIGTERM to `requeue_on` where preemption cancels jobs and they should come back.
    """

    requeue: bool = Field(default=True, description="Requeue the job after a stop by a `requeue_on` signal.")
    requeue_on: list[Literal["SIGUSR1", "SIGTERM"]] = Field(default=["SIGUSR1"], description="Signals that requeue.")
    max_requeues: NonNegativeInt = Field(
        default=20, description="Retry cap: a job requeued this many times stops instead (SLURM_RESTART_COUNT)."
    )


class GenerateConfig(Section):
    prompt: str = "\n"
    max_new_tokens: PositiveInt = 200
    temperature: float = Field(default=1.0, ge=0, description="0: always the most likely token.")
    top_k: PositiveInt | None = None


# The precisions FSDP2 runs in here (Lightning's ModelParallelStrategy takes them; fp16 would need a loss scaler).
FSDP_PRECISIONS = ("32", "32-true", "bf16-mixed", "bf16-true")

Task = Literal["image_classification", "text_classification", "language_modeling"]
LoggerName = Literal["csv", "tensorboard", "wandb"]

# What each task logs (trainer.tasks; a test trains each task and checks this table against its metrics).
LOGGED_METRICS: dict[str, tuple[str, ...]] = {
    "image_classification": ("val/loss", "val/acc", "val/precision", "val/recall", "val/f1", "train/loss"),
    "text_classification": ("val/loss", "val/acc", "val/precision", "val/recall", "val/f1", "train/loss"),
    "language_modeling": ("val/loss", "val/ppl", "train/loss"),
}

_FAMILIES_BY_TASK: dict[str, set[str]] = {
    "image_classification": {"cnn", "custom"},
    "text_classification": {"lstm", "transformer", "custom", "huggingface"},
    "language_modeling": {"lstm", "transformer", "custom", "huggingface"},
}


class RunConfig(Section):
    """A whole run: what `trainer fit` trains and where it writes."""

    name: str | None = Field(default=None, description="Recipe name; runs go to runs/<name>/<timestamp>.")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _a_name_not_a_path(cls, name: str | None) -> str | None:
        # runs/<name>/ is a folder of runs/: '../x' would write outside it, where `trainer runs` never looks.
        plain = name is None or (
            name.strip() == name and name and not name.startswith(".")
            and len(name.encode("utf-8", "surrogatepass")) <= 128  # file systems count a folder name in bytes
            and not any(c in "/\\" or not c.isprintable() for c in name)
        )  # fmt: skip
        if not plain:
            raise ValueError(
                "a recipe name is a folder name under runs/, not a path: give a plain name (no '/', not starting "
                "with '.', at most 128 bytes), or set run_dir= to write elsewhere"
            )
        return name

    inherits: str | None = Field(default=None, description="Recipe (name or path) this one changes.")
    task: Task
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="numpy's seed range, which Lightning keeps to.")
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    performance: PerformanceConfig = PerformanceConfig()
    trainer: TrainerConfig = TrainerConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logger: list[LoggerName] = Field(default=["csv"], description="csv is always on; add tensorboard, wandb.")
    wandb: WandbConfig = WandbConfig()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    fsdp: FSDPSection = FSDPSection()
    generate: GenerateConfig = GenerateConfig()
    slurm: SlurmConfig = SlurmConfig()
    run_dir: str | None = Field(default=None, description="Run directory; default runs/<name>/<timestamp>.")
    overwrite: bool = Field(default=False, description="Allow writing into an existing, non-empty run_dir.")
    resume: str | None = Field(default=None, description="Run directory to continue, or `last`.")
    ckpt: str | None = Field(default=None, description="Checkpoint for test and generate.")
    init_from: str | None = Field(
        default=None,
        description="Warm start: weights of an earlier run (its export folder, run directory or a checkpoint) to "
        "start this run's model from; layers whose shapes differ (a new head) start fresh. Not with resume.",
    )

    def _strategy_settings_fit(self) -> None:
        """A strategy's own settings only with that strategy, and FSDP2's precisions: checked here, before torch is
        imported (the settings that need the model or the accelerator are checked when the run starts)."""
        strategy, ds, fsdp = self.trainer.strategy, self.deepspeed, self.fsdp
        if (ds.config is not None or ds.offload_optimizer or ds.offload_parameters) and not strategy.startswith(
            "deepspeed"
        ):
            raise ValueError(f"deepspeed settings (config, offload) need a DeepSpeed strategy, not trainer.strategy="
                             f"{strategy}; use trainer.strategy=deepspeed_stage_2_offload or similar")  # fmt: skip
        if (fsdp.block_class or fsdp.cpu_offload) and not strategy.startswith("fsdp"):
            raise ValueError(f"fsdp settings (block_class, cpu_offload) need an FSDP strategy, not trainer.strategy="
                             f"{strategy}; use trainer.strategy=fsdp or drop them")  # fmt: skip
        if strategy.startswith("fsdp") and self.trainer.precision not in FSDP_PRECISIONS:
            raise ValueError(f"trainer.strategy={strategy} runs in {', '.join(FSDP_PRECISIONS[1:])} (fp16 would need a "
                             f"loss scaler Lightning's FSDP2 has not), not trainer.precision={self.trainer.precision}; "
                             "use bf16-mixed, or DeepSpeed for fp16")  # fmt: skip

    @field_validator("logger", mode="before")
    @classmethod
    def _logger_list(cls, value: object) -> object:
        # `logger=wandb` on the command line is one name; csv is always kept.
        names = [value] if isinstance(value, str) else list(value or [])
        return ["csv", *[n for n in names if n != "csv"]]

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.model.family not in _FAMILIES_BY_TASK[self.task]:
            allowed = ", ".join(sorted(_FAMILIES_BY_TASK[self.task]))
            raise ValueError(f"model.family {self.model.family!r} cannot do task {self.task!r}; use one of: {allowed}")
        if self.task == "language_modeling" and getattr(self.model, "bidirectional", False):
            raise ValueError("a language model reads left to right; set model.bidirectional=false")
        if self.performance.channels_last and self.task != "image_classification":
            raise ValueError("performance.channels_last is for images (the CNN); drop it for a text model")
        if self.model.family == "huggingface":
            tokenizer = self.data.tokenizer
            if tokenizer is not None and tokenizer.kind != "pretrained":
                raise ValueError("a pretrained model reads its own tokenizer's ids; drop data.tokenizer")
            if tokenizer is None or tokenizer.path is None:
                self.data.tokenizer = TokenizerConfig(
                    kind="pretrained", path=self.model.pretrained, local_files_only=self.model.local_files_only
                )
        if self.task != "image_classification" and self.data.tokenizer is None:
            raise ValueError(f"task {self.task!r} needs data.tokenizer (kind: bpe, wordpiece or char)")
        if (
            self.data.tokenizer is not None
            and self.data.tokenizer.kind == "pretrained"
            and not self.data.tokenizer.path
        ):
            raise ValueError("data.tokenizer.kind=pretrained needs data.tokenizer.path (a folder with tokenizer.json)")
        if self.init_from is not None and self.resume is not None:
            raise ValueError("init_from starts a new run from other weights; resume continues this one: give one")
        t = self.trainer
        self._strategy_settings_fit()
        if t.max_epochs in (None, -1) and t.max_steps == -1:
            raise ValueError("set trainer.max_epochs or trainer.max_steps, or training never stops")
        if t.max_epochs == 0 or t.max_steps == 0:
            raise ValueError("trainer.max_epochs=0 or trainer.max_steps=0 trains nothing; give 1 or more")
        if self.optim.fused and t.precision == "16-mixed" and t.gradient_clip_val:
            raise ValueError(
                "optim.fused=true cannot clip gradients in trainer.precision=16-mixed (the GradScaler leaves them "
                "scaled until the fused step); drop optim.fused, use bf16-mixed, or unset trainer.gradient_clip_val"
            )
        logged = LOGGED_METRICS[self.task]
        if self.checkpoint.monitor not in logged:
            raise ValueError(
                f"checkpoint.monitor={self.checkpoint.monitor!r} is not a metric task {self.task!r} logs; "
                f"use one of: {', '.join(logged)}"
            )
        if self.checkpoint.monitor.startswith("val/") and t.limit_val_batches == 0:
            raise ValueError(
                f"trainer.limit_val_batches=0 turns validation off, but checkpoint.monitor="
                f"{self.checkpoint.monitor} needs it; allow some validation batches or monitor train/loss"
            )
        return self
