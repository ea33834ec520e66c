"""Self-pretraining, then fine-tuning: the two `train.py` runs of docs/spt.md chained, resumable.

    python -m experiments.spt experiment=lra_image                       # lra_image_spt, then lra_image init_from=
    python -m experiments.spt experiment=lra_image seed=2 trainer=gpu    # overrides for both runs
    python -m experiments.spt experiment=lra_pathfinder_demo --finetune trainer.max_steps=150
    python -m experiments.spt experiment=lra_text --pretrain module.mask_rate=0.15 --dry-run

1. pretraining: `train.py experiment=<experiment>_spt <overrides> <--pretrain ...>` into `<chain>/pretrain`;
2. fine-tuning: `train.py experiment=<experiment> <overrides> <--finetune ...> init_from=<chain>/pretrain` into
   `<chain>/finetune`; its results.json records the pretraining run under `init_from`.

The chain folder (`--dir`, default `outputs/<experiment>_spt_chain/<hash of the arguments>`) makes the command
resumable: run the same command again after a kill and a finished stage is skipped, a stage with a checkpoint
resumes from it (`ckpt_path=`), and the fine-tuning starts only once the pretraining has finished.
`<chain>/chain.json` lists the commands and the state of both runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tasks.training.state import checkpoint_file

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
Runner = Callable[[list[str]], int]  # train.py overrides -> exit status


def option(overrides: list[str], key: str) -> str | None:
    """The value of `key=` among Hydra overrides (the last one wins), else None."""
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key and "=" in o]
    return values[-1] if values else None


def pretraining_experiment(experiment: str) -> str:
    name = f"{experiment}_spt"
    if not (CONF / "experiment" / f"{name}.yaml").is_file():
        available = sorted(p.stem.removesuffix("_spt") for p in (CONF / "experiment").glob("*_spt.yaml"))
        raise SystemExit(
            f"experiment={experiment} has no pretraining experiment conf/experiment/{name}.yaml; "
            f"experiments with one: {', '.join(available)} (or pass --pretrain experiment=<name>)"
        )
    return name


def default_dir(experiment: str, shared: list[str], pretrain: list[str], finetune: list[str]) -> Path:
    key = json.dumps([experiment, shared, pretrain, finetune])
    return ROOT / "outputs" / f"{experiment}_spt_chain" / hashlib.sha1(key.encode()).hexdigest()[:10]


def stage_state(run_dir: Path) -> str:
    """'done' (results.json), 'resume' (a checkpoint) or 'start'."""
    if (run_dir / "results.json").is_file():
        return "done"
    try:
        checkpoint_file(run_dir)
    except FileNotFoundError:
        return "start"
    return "resume"


def stage_overrides(overrides: list[str], run_dir: Path) -> list[str]:
    """The stage's overrides with where it runs: a fresh run dir, or a resume of the run there."""
    if stage_state(run_dir) == "resume":
        return [*overrides, f"ckpt_path={run_dir}"]
    return [*overrides, f"hydra.run.dir={run_dir}"]


def subprocess_runner(overrides: list[str]) -> int:
    return subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT).returncode


def run_chain(
    experiment: str,
    shared: list[str],
    pretrain: list[str],
    finetune: list[str],
    chain: Path,
    runner: Runner = subprocess_runner,
    dry_run: bool = False,
) -> int:
    """Run (or resume) both stages in `chain`; return the exit status of the first failing stage, else 0."""
    pre_experiment = option(pretrain, "experiment") or pretraining_experiment(experiment)
    stages = {
        "pretrain": [
            f"experiment={pre_experiment}",
            *shared,
            *(o for o in pretrain if o.split("=")[0] != "experiment"),
        ],
        "finetune": [f"experiment={experiment}", *shared, *finetune, f"init_from={chain / 'pretrain'}"],
    }
    record = {"experiment": experiment, "chain": str(chain), "stages": {}}
    chain.mkdir(parents=True, exist_ok=True)
    status = 0
    for name, overrides in stages.items():
        run_dir = chain / name
        state = stage_state(run_dir)
        command = ["python", "train.py", *stage_overrides(overrides, run_dir)]
        record["stages"][name] = {"run_dir": str(run_dir), "state": state, "command": shlex.join(command)}
        if state == "done":
            print(f"[spt] {name}: finished before, {run_dir / 'results.json'}")
            continue
        print(f"[spt] {name} ({'resuming' if state == 'resume' else 'starting'}): {shlex.join(command)}")
        if dry_run:
            continue
        status = runner(command[2:])
        record["stages"][name]["state"] = stage_state(run_dir)
        if status != 0 or record["stages"][name]["state"] != "done":
            print(f"[spt] {name} stopped (exit status {status}); run the same command again to resume it")
            status = status or 1
            break
    (chain / "chain.json").write_text(json.dumps(record, indent=2))
    if status == 0 and not dry_run:
        print(f"[spt] done: {chain / 'finetune' / 'results.json'}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="experiment=<name> and overrides for both runs")
    parser.add_argument(
        "--pretrain", nargs="+", default=[], metavar="OVERRIDE", help="for the pretraining only"
    )
    parser.add_argument(
        "--finetune", nargs="+", default=[], metavar="OVERRIDE", help="for the fine-tuning only"
    )
    parser.add_argument(
        "--dir", type=Path, help="the chain folder (default: outputs/<experiment>_spt_chain/<hash>)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    experiment = option(args.overrides, "experiment")
    if experiment is None:
        parser.error("name the fine-tuning experiment: experiment=<name> (e.g. experiment=lra_image)")
    shared = [o for o in args.overrides if o.split("=", 1)[0] != "experiment"]
    chain = args.dir or default_dir(experiment, shared, args.pretrain, args.finetune)
    return run_chain(experiment, shared, args.pretrain, args.finetune, chain, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
