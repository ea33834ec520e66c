"""Run the whole paper table: every task × {MEGA, MEGA-chunk} (optionally Megalodon, Megalodon-chunk, the
Transformer) × seeds.

    python -m experiments.paper_table --dry-run              # print the commands, run nothing
    python -m experiments.paper_table                        # 8 tasks × 2 models × 5 seeds, then the report
    python -m experiments.paper_table --tasks lra_text lra_image --seeds 1 2 --models mega transformer
    python -m experiments.paper_table --models megalodon megalodon_chunk   # the Megalodon paper's Tables 6 and 7
    python -m experiments.paper_table -- hydra/launcher=slurm trainer=gpu   # extra overrides for every job
    python -m experiments.paper_table --spt --models mega --tasks lra_image    # + self-pretrained runs (docs/spt.md)

Each model is one Hydra multirun (so `hydra/launcher=slurm` sends all its jobs to the cluster at once). A failed
job does not stop the others: Hydra runs the whole sweep and reports the failure at the end; this script goes on
with the next multirun and lists the failures before it writes the report (`experiments.report`) of everything
that finished. With `--spt`, every task with a self-pretraining experiment (`<task>_spt`) is also run as the
chain of `experiments.spt` (pretraining, then fine-tuning from it) per model and seed, one after another on this
machine, into `<out>/<model>_spt/<task>/seed<N>/`; the report puts them next to the same recipe from scratch.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from experiments import paper
from experiments.report import main as report_main

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
MODELS = ("mega", "mega_chunk", "megalodon", "megalodon_chunk", "transformer")


def available_tasks() -> list[str]:
    """Tasks with an experiment config, in the paper's order, then any other experiment with a `_chunk` variant."""
    names = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    ordered = [name for name in paper.experiments() if name in names and not name.endswith("_chunk")]
    return ordered + sorted(n for n in names - set(ordered) if f"{n}_chunk" in names)


def experiments_for(model: str, tasks: list[str]) -> list[str]:
    """The experiment names one model runs: `<task>` (MEGA), `<task>_chunk` (MEGA-chunk), or the tasks that have
    a size in conf/arch/<family>/ (the Transformer: not SC-Raw, out of memory in the paper; Megalodon: the LRA tasks
    and sc_raw). Megalodon-chunk runs `<task>` with model=megalodon_chunk (which picks `<task>_chunk`) where the
    two chunk sizes differ: SC-Raw's one Megalodon model (c = 1000) runs once, with model=megalodon."""
    if model == "mega":
        return list(tasks)
    if model == "mega_chunk":
        return [f"{t}_chunk" for t in tasks if (CONF / "experiment" / f"{t}_chunk.yaml").exists()]
    if model == "megalodon_chunk":
        return [
            t
            for t in tasks
            if (CONF / "arch" / "megalodon" / f"{t}_chunk.yaml").exists() and chunks_differ(t)
        ]
    return [t for t in tasks if (CONF / "arch" / model / f"{t}.yaml").exists()]


def chunks_differ(task: str) -> bool:
    """Whether Megalodon's two recipes for the task differ in chunk size (SC-Raw: both c = 1000)."""
    from omegaconf import OmegaConf

    def chunk(name: str) -> int:
        node = OmegaConf.load(CONF / "arch" / "megalodon" / f"{name}.yaml")
        return int(node.chunk_size)

    return chunk(task) != chunk(f"{task}_chunk")


def commands(
    models: list[str], tasks: list[str], seeds: list[int], out: Path, extra: list[str]
) -> list[list[str]]:
    """One `train.py -m` command per model, sweeping its experiments × seeds into out/<model>/."""
    cmds = []
    for model in models:
        names = experiments_for(model, tasks)
        if not names:
            continue
        cmd = [
            sys.executable,
            "train.py",
            "-m",
            "experiment=" + ",".join(names),
            "seed=" + ",".join(map(str, seeds)),
        ]
        if model not in ("mega", "mega_chunk"):
            cmd.append(f"model={model}")
        cmd += [f"hydra.sweep.dir={out / model}", *extra]
        cmds.append(cmd)
    return cmds


def spt_commands(
    models: list[str], tasks: list[str], seeds: list[int], out: Path, extra: list[str]
) -> list[list[str]]:
    """One `experiments.spt` chain per model, experiment with an `_spt` experiment, and seed."""
    cmds = []
    for model in models:
        for experiment in experiments_for(model, tasks):
            if not (CONF / "experiment" / f"{experiment}_spt.yaml").exists():
                continue
            for seed in seeds:
                cmd = [sys.executable, "-m", "experiments.spt", f"experiment={experiment}", f"seed={seed}"]
                if model == "transformer":
                    cmd.append("model=transformer")
                cmds.append([*cmd, *extra, "--dir", str(out / f"{model}_spt" / experiment / f"seed{seed}")])
    return cmds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", nargs="+", default=None, help="experiment names without _chunk (default: all)"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["mega", "mega_chunk"])
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="the paper averages 5 seeds"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("multirun/paper_table"), help="root of all sweep folders"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument(
        "--spt", action="store_true", help="also self-pretraining + fine-tuning chains (experiments.spt)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides added to every job (after --)")
    args = parser.parse_args(argv)

    known = available_tasks()
    tasks = args.tasks or known
    unknown = sorted(set(tasks) - set(known))
    if unknown:
        parser.error(f"no experiment config for {unknown} in {CONF / 'experiment'}; choose from {known}")
    cmds = commands(args.models, tasks, args.seeds, args.out, args.overrides)
    if args.spt:
        cmds += spt_commands(args.models, tasks, args.seeds, args.out, args.overrides)
    if args.dry_run:
        for cmd in cmds:
            print(shlex.join(cmd))
        return 0

    failed = []
    for cmd in cmds:
        print("+", shlex.join(cmd), flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(shlex.join(cmd))
    for cmd in failed:
        print(f"at least one job failed in: {cmd} (its log is in the job folder; the others finished)")
    report_status = report_main([str(ROOT / args.out)])
    return 1 if failed or report_status else 0


if __name__ == "__main__":
    sys.exit(main())
