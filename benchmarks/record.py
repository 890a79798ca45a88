"""What every benchmark shares: the machine it ran on, running one measurement in a fresh process, and
writing its results (a JSON record and a markdown table beside it) under the folder given with --out."""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

VERSIONED = ("torch", "lightning", "deepspeed", "datasets", "tokenizers", "torchdata", "trainer")


def machine(accelerator: str) -> dict[str, str]:
    """The machine, the device the run used, and the versions of what it ran (those installed)."""
    import torch

    device = torch.cuda.get_device_name(0) if accelerator == "gpu" else f"cpu x{os.cpu_count()}"
    record = {"date": datetime.date.today().isoformat(), "machine": platform.node(), "device": device,
              "python": platform.python_version()}  # fmt: skip
    for name in VERSIONED:
        try:
            record[name] = getattr(importlib.import_module(name), "__version__", "dev")
        except ImportError:
            continue
    return record


def run_child(script: str, words: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """`python script words...` in a fresh process; its last line of stdout is one JSON object."""
    result = subprocess.run([sys.executable, script, *words], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(words)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def result_path(folder: Path, name: str, record: dict[str, Any]) -> Path:
    """`<date>-<name>-<cpu|gpu>.json`; a second run on the same day gets `...-2.json` and so on: no
    measurement overwrites another."""
    slug = "cpu" if record["device"].startswith("cpu") else "gpu"
    out = folder / f"{record['date']}-{name}-{slug}.json"
    count = 1
    while out.exists():
        count += 1
        out = folder / f"{record['date']}-{name}-{slug}-{count}.json"
    return out


def write_results(folder: Path, name: str, record: dict[str, Any], header: list[str], rows: list[list[Any]]) -> Path:
    """`<date>-<name>-<cpu|gpu>.json` and the table beside it as `.md`; returns the JSON's path."""
    out = result_path(folder, name, record)
    out.write_text(json.dumps(record, indent=2) + "\n")
    lines = [header, ["---"] * len(header), *rows]
    out.with_suffix(".md").write_text("".join("| " + " | ".join(map(str, line)) + " |\n" for line in lines))
    return out


def peak_memory(accelerator: str) -> int:
    """What this process used at its peak: CUDA's peak allocation on a GPU, the peak RSS on a CPU."""
    if accelerator == "gpu":
        import torch

        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
