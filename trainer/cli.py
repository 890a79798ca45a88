"""The `trainer` command: parse words, call `trainer.api`, print failures as one line with a documented exit status.

Exit status: 0 done (or stopped and requeued on SLURM), 2 bad input, 3 loss diverged, 4 could not write
(a full disk, lost permissions), 130 Ctrl-C before training, 128 + signal when a signal stopped a run
(with a checkpoint to resume from).

The config is loaded and checked before torch or Lightning is imported, so `trainer recipes`, `trainer
config` and every config error answer in well under a second, whatever the command.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import re
import signal
import sys
from pathlib import Path

from trainer.cluster.env import run_dir_note
from trainer.cluster.launch import EXIT_PROCESS_DIED, report_failure
from trainer.cluster.peers import is_lost_peer
from trainer.cluster.signals import Interrupted, ctrl_c_exits_at_once, ctrl_c_has_nothing_left_to_stop
from trainer.errors import PeerLost, TrainingDiverged, UserError, WriteFailed
from trainer.quiet import print_on_a_line_of_its_own, silence_dependency_noise
from trainer.report import commands as report_commands

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_WRITE_FAILED = 4
EXIT_INTERRUPTED = 128 + signal.SIGINT
MAX_GPU_MEMORY = 64 * 2**40  # `trainer plan --gpu-memory`: more than any accelerator holds
# A full disk, a quota, a read-only or immutable place: the environment refused a write.
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
# `trainer generate ... prompt="ROMEO:" max_new_tokens=200`: short names for the generate section.
GENERATE_SHORT_KEYS = ("prompt", "max_new_tokens", "temperature", "top_k")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UserError(f"{message}; run `trainer --help`")


def _positive(text: str) -> int:
    value = int(text) if re.fullmatch(r"[0-9]{1,9}", text) else 0  # ASCII digits: int() also reads '２'
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of 1 or more (up to 999999999)")
    return value


def _count(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # also nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of 0 or more")
    return value


def _port(text: str) -> int:
    value = int(text) if re.fullmatch(r"[0-9]{1,5}", text) else 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return value


def _host(text: str) -> str:
    """A host name or IP address, as `--rdzv_endpoint` takes it (an IPv6 address in brackets)."""
    bare = text.strip("[]")
    try:
        ip = ipaddress.ip_address(bare.split("%")[0])
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", text) and text != "$HEAD_NODE":
            raise argparse.ArgumentTypeError(f"{text!r} is not a host name or IP address") from None
        return text
    return f"[{bare}]" if ip.version == 6 else bare


def _check_head_node(head: str, nodes: int) -> None:
    """Across nodes, a head address that leads each node to itself (see trainer.cluster.hosts)."""
    from trainer.cluster.hosts import unreachable_kind

    try:
        kind = unreachable_kind(head.strip("[]"))
    except ValueError:  # a name: resolved where the job runs (`trainer nodecheck`)
        return
    if nodes > 1 and kind is not None:
        raise UserError(f"--head-node {head} is {kind}, which no other node reaches; give the head node's "
                        "hostname or network address")  # fmt: skip


def _memory_size(text: str) -> int:
    """'80GB', '80GiB', '141G', '40000MB' -> bytes (GB and GiB both read as 2**30, as GPU vendors' cards are)."""
    match = re.fullmatch(r"\s*(\d{1,9}(?:\.\d{1,9})?)\s*([KMGT])i?B?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write it like 80GB")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match.group(2).upper()]
    size = int(float(match.group(1)) * scale)
    if not 2**20 <= size <= MAX_GPU_MEMORY:
        raise argparse.ArgumentTypeError(f"{text!r} is not the memory of one GPU; give 1MB to 64TB, like 80GB")
    return size


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trainer", description="Train models from YAML recipes.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("recipes", help="list the shipped recipes")
    for name, text in (
        ("config", "print the fully resolved recipe"),
        ("fit", "train (resume=RUN_DIR|last continues a stopped run)"),
        ("test", "evaluate a checkpoint: ckpt=PATH"),
        ("generate", "sample from a language model: ckpt=PATH prompt=TEXT max_new_tokens=N"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("recipe", help="shipped recipe name or path to a YAML file")
        command.add_argument("overrides", nargs=argparse.REMAINDER, help="key.path=value words")
    plan = commands.add_parser("plan", help="world size, batches, memory per GPU and launch commands for a cluster")
    plan.add_argument("recipe", help="shipped recipe name or path to a YAML file")
    plan.add_argument("overrides", nargs="*", help="key.path=value words")
    plan.add_argument("--nodes", type=_positive, default=1)
    plan.add_argument("--gpus-per-node", type=_positive, default=8)
    plan.add_argument("--gpu-memory", type=_memory_size, default=None, help="e.g. 80GB: say whether each strategy fits")
    plan.add_argument("--head-node", type=_host, default="$HEAD_NODE", help="rendezvous host in the printed commands")
    plan.add_argument("--port", type=_port, default=29500)
    slurm = commands.add_parser("slurm", help="render slurm/train.sbatch for a recipe and submit it (--dry-run: print)")
    slurm.add_argument("recipe", help="shipped recipe name or path to a YAML file")
    slurm.add_argument("overrides", nargs="*", help="key.path=value words")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus-per-node", type=int, default=None, help="one worker per GPU")
    slurm.add_argument("--ntasks-per-node", type=int, default=None, help="without GPUs: CPU workers per node")
    slurm.add_argument("--time", default=None, help="time limit, e.g. 24:00:00")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--job-name", default=None, help="default: the recipe's name")
    slurm.add_argument("--signal-grace", type=int, default=None, help="seconds of warning (USR1) before the limit")
    slurm.add_argument("--output", default=None, help="job log; default slurm-<job name>-<job id>.out")
    slurm.add_argument("--dry-run", action="store_true", help="print the script instead of submitting it")
    devices = commands.add_parser("devices", help="processes per node a recipe starts on this machine (launch scripts)")
    devices.add_argument("--expect", type=_positive, default=None, help="fail unless the recipe allows this many")
    devices.add_argument("recipe", help="shipped recipe name or path to a YAML file")
    devices.add_argument("overrides", nargs=argparse.REMAINDER, help="key.path=value words")
    nodecheck = commands.add_parser("nodecheck", help="can this node join a multi-node job? (launch scripts)")
    nodecheck.add_argument("master_addr", help="the head node's name or address (torchrun's rendezvous)")
    nodecheck.add_argument("--nnodes", type=_positive, default=1)
    export = commands.add_parser(
        "export",
        help="a run's checkpoint as one folder: RUN_DIR/export[-onnx|-torchscript]/",
        description="Export a checkpoint (default last.ckpt) as one self-contained folder with manifest.json: "
        "format=safetensors (default, RUN_DIR/export/), onnx (RUN_DIR/export-onnx/, needs the export extra) or "
        "torchscript (RUN_DIR/export-torchscript/); out=DIR writes elsewhere.",
    )
    export.add_argument("run_dir", help="a run directory written by `trainer fit`")
    export.add_argument(
        "overrides", nargs="*", help="ckpt=PATH (default last.ckpt), format=safetensors|onnx|torchscript, out=DIR"
    )
    predict = commands.add_parser(
        "predict",
        help="run a model on new inputs: image files, texts (or text files), prompts",
        description="Predict from an export folder (trainer export) or a run directory. Classifiers print "
        "label<TAB>probability<TAB>input per input (with --top-k: label:p label:p ...<TAB>input); language "
        "models print each continued prompt, the next after a line '---'. --json: one JSON object per input.",
    )
    predict.add_argument("model", help="an export folder (trainer export) or a run directory")
    predict.add_argument("inputs", nargs="+", help="image files or folders; texts or text files; prompts")
    predict.add_argument("--json", action="store_true", help="one JSON object per input")
    predict.add_argument("--batch-size", type=_positive, default=32, help="inputs per forward pass (default 32)")
    predict.add_argument("--top-k", type=_positive, default=None, help="classifiers: the k best labels (default 1); "
                         "language models: sample among the k likeliest tokens (default all)")  # fmt: skip
    predict.add_argument("--temperature", type=_non_negative, default=1.0,
                         help="language models (default 1.0); 0: greedy")  # fmt: skip
    predict.add_argument("--max-new-tokens", type=_positive, default=200, help="language models (default 200)")
    predict.add_argument("--seed", type=_count, default=0, help="language models: the sampling seed (default 0)")
    predict.add_argument("--ckpt", default=None, help="a run directory's checkpoint (default last.ckpt)")
    report_commands.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    silence_dependency_noise()
    try:
        return _run(_parse(argv))
    except UserError as err:
        return _fail(err, EXIT_USER_ERROR)
    except TrainingDiverged as err:
        return _fail(err, EXIT_DIVERGED)
    except WriteFailed as err:
        return _fail(err, EXIT_WRITE_FAILED)
    except OSError as err:
        if err.errno not in WRITE_FAILURES:
            raise
        where = f" {err.filename}" if err.filename else ""
        return _fail(f"cannot write{where}: {err.strerror}; free space or fix permissions", EXIT_WRITE_FAILED)
    except Interrupted as err:  # Ctrl-C during a run's set-up
        return _fail(err, EXIT_INTERRUPTED)
    except PeerLost as err:
        # Under `trainer fit`'s own launcher, the launcher says it, naming the rank that died.
        return _fail(err, EXIT_PROCESS_DIED, say=run_dir_note() is None)
    except RuntimeError as err:  # a lost peer outside `fit` (test, generate under torchrun): no run to name
        if not is_lost_peer(err):
            raise
        return _fail("another process of the job stopped answering (it died, or its node went down)", EXIT_PROCESS_DIED)
    except KeyboardInterrupt:  # Ctrl-C anywhere else, before a run began
        return _fail("interrupted (Ctrl-C); nothing was saved", EXIT_INTERRUPTED)
    finally:
        _release_process_group()


def _fail(err: BaseException | str, status: int, say: bool = True) -> int:
    line = f"error: {err}"
    if say and "lightning" in sys.modules:
        print_on_a_line_of_its_own(line)
    elif say:
        print(line, file=sys.stderr, flush=True)
    report_failure(line, status)  # to torchrun's agent, when a worker
    return status


_made_a_process_group = False


def _release_process_group() -> None:
    """Destroys the process group (Lightning does not destroy the one it made) and remembers that this process
    had one: see made_a_process_group."""
    global _made_a_process_group
    distributed = getattr(sys.modules.get("torch"), "distributed", None)  # none: torch never (fully) imported
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
        _made_a_process_group = True


def made_a_process_group() -> bool:
    """Whether the command ran in a process group. Its collective threads then outlive it (see
    trainer.__main__.end_before_finalization): destroy_process_group neither stops nor joins gloo's worker
    threads; they are joined when the last reference to the group goes, and after a run something still holds
    one (measured on a 2-rank `trainer test`: the threads outlive destroy_process_group and a full collection)."""
    return _made_a_process_group


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """`plan` and `slurm` take options and overrides in any order (`trainer slurm R --nodes 2 optim.lr=1e-3`)."""
    args, extra = _parser().parse_known_args(argv)
    for word in extra:
        if word.startswith("-") or args.command not in ("plan", "slurm"):
            raise UserError(f"unrecognized argument {word!r}; run `trainer {args.command} --help`")
        args.overrides.append(word)
    return args


def _run(args: argparse.Namespace) -> int:
    # `runs` and `predict` never load a recipe: they answer without importing the config (omegaconf, pydantic).
    if args.command in report_commands.COMMANDS:
        return report_commands.run(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "nodecheck":
        return _nodecheck(args.master_addr, args.nnodes)
    from trainer.config import load_config, shipped_recipes, to_yaml
    from trainer.extras import check_extras

    if args.command == "recipes":
        return _list_recipes(shipped_recipes())
    if args.command == "config":
        print(to_yaml(load_config(args.recipe, args.overrides)), end="")
        return 0
    if args.command == "plan":
        cfg = load_config(args.recipe, args.overrides)
        check_extras(cfg, "plan")
        from trainer.distributed.batching import plan_batches

        _check_head_node(args.head_node, args.nodes)
        plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, args.nodes * args.gpus_per_node)
        return _plan(args, cfg)
    if args.command == "slurm":
        return _slurm(args, load_config(args.recipe, args.overrides))
    if args.command == "export":
        _export_words(args.overrides)  # bad words answer before torch is imported
        return _in_process(args, None)
    if args.command == "generate":
        args.overrides = [_expand_generate_key(word) for word in args.overrides]
    with ctrl_c_exits_at_once():  # the config is read and checked; nothing is written yet
        cfg = _command_config(args)
        check_extras(cfg, args.command)
    if args.command == "devices":
        return _devices(cfg, args.expect)
    if args.command in ("fit", "test"):
        workers = _workers_to_start(cfg)
        if workers > 1:
            from trainer.cluster.launch import run_workers
            from trainer.distributed.batching import plan_batches

            plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, workers)  # before any worker starts
            return run_workers(workers, [args.command, args.recipe, *args.overrides], _gpu_indices(cfg))
    return _in_process(args, cfg)


def _command_config(args: argparse.Namespace):
    """The command's config, checked before anything heavy is imported."""
    from trainer.lifecycle.run_config import eval_config, fit_config

    if args.command == "fit":
        return fit_config(args.recipe, args.overrides)
    if args.command in ("test", "generate"):
        return eval_config(args.recipe, args.overrides, args.command)
    from trainer.config import load_config

    return load_config(args.recipe, args.overrides)


def _workers_to_start(cfg) -> int:
    """Processes this command starts here: 1 under a launcher (torchrun started each), else the recipe's count."""
    from trainer.cluster.env import torchrun_world

    if torchrun_world() is not None:
        return 1
    if cfg.trainer.num_nodes > 1:
        raise UserError(
            f"trainer.num_nodes={cfg.trainer.num_nodes} needs one torchrun per node: run launch/torchrun.sh on "
            "each node or sbatch slurm/train.sbatch (trainer.num_nodes is then taken from the launcher)"
        )
    return _workers_per_node(cfg)


def _workers_per_node(cfg) -> int:
    from trainer.config.schema import explicit_device_count

    count = explicit_device_count(cfg.trainer.devices)
    if count == 1 or (count is None and cfg.trainer.accelerator == "cpu"):
        return 1  # no torch import needed to know
    with contextlib.redirect_stdout(sys.stderr):
        from trainer.distributed.topology import devices_per_node

        return devices_per_node(cfg.trainer.accelerator, cfg.trainer.devices)


def _devices(cfg, expect: int | None) -> int:
    """`trainer devices`: what launch/single_node.sh starts; with --expect, whether the recipe allows that."""
    from trainer.config.schema import explicit_device_count

    asked = explicit_device_count(cfg.trainer.devices)
    if expect is not None and asked is not None and asked != expect:
        raise UserError(
            f"the launcher would start {expect} processes but the recipe asks trainer.devices={cfg.trainer.devices!r}; "
            "drop one of them"
        )
    print(expect if expect is not None else _workers_per_node(cfg))
    return 0


def _gpu_indices(cfg) -> list[int] | None:
    """`trainer.devices=[0,2]` on GPUs: the workers see those GPUs only."""
    devices = cfg.trainer.devices
    if isinstance(devices, list) and cfg.trainer.accelerator != "cpu":
        return devices
    return None


def _in_process(args: argparse.Namespace, cfg) -> int:
    # Progress bars and library chatter (DeepSpeed logs to stdout) go to stderr; stdout carries only the
    # result, so that `trainer test ... > metrics.json` and `trainer generate ... > sample.txt` work.
    with contextlib.redirect_stdout(sys.stderr):
        from trainer import api
        from trainer.quiet import progress_bars_follow_the_terminal

        progress_bars_follow_the_terminal()

        if args.command == "export":
            words = _export_words(args.overrides)
            out = Path(words["out"]).expanduser() if "out" in words else None
            result = str(api.export(Path(args.run_dir), words.get("ckpt"), words.get("format", "safetensors"), out))
        elif args.command == "fit":
            summary = api.fit(cfg)
            result = json.dumps(summary, indent=2)
        elif args.command == "test":
            result = json.dumps(api.test(cfg), indent=2)
        else:
            result = api.generate(cfg)
        ctrl_c_has_nothing_left_to_stop()
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # on several processes, one result
        print(result, flush=True)
    if args.command == "fit" and summary["stopped_by"] and not summary["requeued"]:
        # Stopped by a signal, with a checkpoint to resume from: the shell convention 128 + signal. A SLURM
        # job that requeued itself exits 0: its work goes on in the requeued job (and torchrun, seeing a
        # failed worker, would restart the group here instead).
        return 128 + signal.Signals[summary["stopped_by"]].value
    return 0


def _nodecheck(master_addr: str, nnodes: int) -> int:
    """Before torchrun starts on a node: the head node's name resolves here, and with several nodes this
    node's hostname resolves to an address the others can reach. Prints nothing when all is well."""
    from trainer.cluster.hosts import check_reachable_hostname, check_rendezvous_host

    check_rendezvous_host(master_addr, nnodes)
    if nnodes > 1:
        check_reachable_hostname()
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Neither Lightning nor torch is imported for an ONNX export; for the rest their chatter goes to stderr."""
    with ctrl_c_exits_at_once():  # predicting writes nothing: Ctrl-C may end it anywhere
        from trainer.predict.run import Options, predict, render

        options = Options(args.batch_size, args.top_k, args.temperature, args.max_new_tokens, args.seed, args.ckpt)
        with contextlib.redirect_stdout(sys.stderr):
            results = predict(Path(args.model).expanduser(), args.inputs, options)
    for index, result in enumerate(results):
        if index and "text" in result and not args.json:
            print("---")  # continued prompts span lines: a line between them
        print(json.dumps(result) if args.json else render(result), flush=True)
    return 0


def _list_recipes(recipes: dict) -> int:
    from trainer.config.load import read_description

    width = max(map(len, recipes), default=0)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {read_description(path)}")
    return 0


def _plan(args: argparse.Namespace, cfg) -> int:
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed logs to stdout on import
        from trainer.distributed.planning import make_plan, render
        from trainer.distributed.strategy import check_strategy_settings

        check_strategy_settings(cfg)
        plan = make_plan(
            cfg, args.recipe, args.overrides, args.nodes, args.gpus_per_node, args.gpu_memory, args.head_node, args.port
        )
    print(render(plan, cfg.trainer.strategy))
    return 0


def _slurm(args: argparse.Namespace, cfg) -> int:
    from trainer.cluster.sbatch import Resources, check_fits_recipe, render, submit, template_path

    resources = Resources(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        ntasks_per_node=args.ntasks_per_node,
        time=args.time,
        partition=args.partition,
        account=args.account,
        job_name=args.job_name or cfg.name,
        signal_grace_s=args.signal_grace,
        output=args.output,
    )
    check_fits_recipe(resources, cfg.trainer)
    script = render(template_path().read_text(), resources, [args.recipe, *args.overrides])
    if args.dry_run:
        print(script, end="")
    else:
        print(submit(script))  # the job id
    return 0


EXPORT_WORDS = ("ckpt", "format", "out")


def _export_words(words: list[str]) -> dict[str, str]:
    """`ckpt=PATH format=onnx out=DIR`, each at most once; checked before torch is imported."""
    given: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if key not in EXPORT_WORDS or not sep or not value:
            raise UserError(f"`trainer export` takes ckpt=PATH, format=safetensors|onnx|torchscript and out=DIR, "
                            f"not {word!r}")  # fmt: skip
        if key in given:
            raise UserError(f"`trainer export` got {key}= twice; give it once")
        given[key] = value
    formats = ("safetensors", "onnx", "torchscript")  # trainer.export.FORMATS, without importing torch
    if given.get("format", "safetensors") not in formats:
        raise UserError(f"format={given['format']!r} is not an export format; use one of {', '.join(formats)}")
    return given


def _expand_generate_key(word: str) -> str:
    key, sep, value = word.partition("=")
    return f"generate.{key}={value}" if sep and key in GENERATE_SHORT_KEYS else word
