"""The one publisher of experiments/: Markdown tables, BENCHMARKS.md sections, JSON files, machine information.

A benchmark times its steps with `experiments.harness`, then:

    info = machine_info(device)                            # at the start: date, commit, CPU/GPU, versions, load
    command = command_line("experiments.my_bench", argv)   # how to reproduce it
    text = "\\n".join([*header(command, info, threads), "", markdown_table(headers, rows)])
    write("my_bench", text, args, {"machine": info, "command": command, "rows": rows})

`write` prints the block, replaces the `<!-- my_bench:start -->` ... `<!-- my_bench:end -->` section of
`--markdown` (BENCHMARKS.md by default, or none) and writes `payload` to `--json`; `add_arguments` declares those
options. `fmt`, `fmt_ratio` and `ratio` format table cells ('–' where a figure is missing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"


def add_arguments(parser: argparse.ArgumentParser, markdown: Path | None = BENCHMARKS) -> None:
    """--markdown PATH (default `markdown`; None: only with --markdown), --no-markdown, --json PATH."""
    where = f"default {markdown.name}" if markdown else "default: print only"
    parser.add_argument(
        "--markdown", type=Path, default=markdown, help=f"file to write the table into ({where})"
    )
    parser.add_argument("--no-markdown", action="store_true", help="only print the tables")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw result here")


def write(name: str, text: str, args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Print the Markdown block, put it into the `name` section of --markdown, dump `payload` to --json."""
    print("\n" + text)
    if args.markdown and not args.no_markdown:
        write_section(args.markdown, name, text)
        print(f"\nwrote {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")


def machine_info(device: str) -> dict[str, Any]:
    """What the figures depend on: host, CPU or GPU model, core count, library versions, commit, date, load."""
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "commit": _git_commit(),
        "load_start": os.getloadavg()[0],
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def header(command: str, info: dict[str, Any], threads: int) -> list[str]:
    """The lines every published table starts with: the command, date, commit, machine, load, versions."""
    machine = f"{info['cpu']} ({info['cpu_count']} cores visible, {threads} threads used)"
    if "gpu" in info:
        machine = f"{info['gpu']}; host {machine}"
    versions = f"torch {info['torch']}"
    if "transformers" in info:
        versions += f", transformers {info['transformers']}"
    return [
        f"Command: `{command}`",
        "",
        f"- Date: {info['date']}; commit {info['commit']}; machine: {machine}",
        load_line(info),
        f"- {versions}, python {info['python']}, device {info['device']}",
    ]


def load_line(info: dict[str, Any]) -> str:
    """The machine's 1-minute load average at the start and end of the run: above the core count, timings suffer."""
    end = os.getloadavg()[0]
    busy = max(info["load_start"], end) > 0.5 + (info["cpu_count"] or 1)
    warning = " (busier than its cores: timings are noisy)" if busy else ""
    return f"- Load average at start / end: {info['load_start']:.1f} / {end:.1f} on {info['cpu_count']} cores{warning}"


def command_line(module: str, argv: list[str]) -> str:
    """How a script was invoked, as a user would retype it."""
    return " ".join([f"python -m {module}", *argv])


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for a table cell; '–' where there is none (failed run, missing baseline)."""
    return "–" if value is None else f"{value:.{digits}g}"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}×"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` in `path` (append if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
