"""Self-pretraining + fine-tuning against training from scratch at equal total updates, over seeds.

    python -m experiments.spt_compare experiment=lra_pathfinder_demo --seeds 1 2 3 --pretrain-steps 150 \\
        --finetune-steps 150                    # from scratch: 300 updates; SPT: 150 pretraining + 150 fine-tuning

Per seed: `train.py experiment=<e> seed=<s> trainer.max_steps=<P + F>` (from scratch), the same with F updates
(from scratch with only the fine-tuning budget: what the pretrained start adds), and the chain of `experiments.spt`
(`<e>_spt` for P updates, then `<e>` for F updates from it), each in its own folder under `--out` (default
`outputs/spt_compare/<e>`); finished runs are reused, killed ones resume. Prints and writes `<out>/comparison.md`
(and .json): test accuracy of the best-validation checkpoint per seed, mean ± sample std.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from experiments.spt import ROOT, option, run_chain, stage_overrides, stage_state, subprocess_runner


def accuracy(run_dir: Path) -> tuple[float | None, float | None, float | None]:
    """(test/acc, val/acc_best, wall_seconds) of a finished run."""
    results = json.loads((run_dir / "results.json").read_text())
    return results.get("test/acc"), results.get("val/acc_best"), results.get("wall_seconds")


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}" if values else "–"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="experiment=<name> and overrides for every run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--pretrain-steps", type=int, required=True)
    parser.add_argument("--finetune-steps", type=int, required=True)
    parser.add_argument("--out", type=Path, help="default: outputs/spt_compare/<experiment>")
    args = parser.parse_args(argv)
    experiment = option(args.overrides, "experiment")
    if experiment is None:
        parser.error("name the experiment: experiment=<name>")
    shared = [o for o in args.overrides if o.split("=", 1)[0] != "experiment"]
    out = args.out or ROOT / "outputs" / "spt_compare" / experiment
    total = args.pretrain_steps + args.finetune_steps

    rows = []
    for seed in args.seeds:
        scratch, short = out / "scratch" / f"seed{seed}", out / "scratch_finetune_budget" / f"seed{seed}"
        for run_dir, steps in ((scratch, total), (short, args.finetune_steps)):
            if stage_state(run_dir) != "done":
                overrides = [
                    f"experiment={experiment}",
                    f"seed={seed}",
                    *shared,
                    f"trainer.max_steps={steps}",
                ]
                print(f"[compare] from scratch, seed {seed}: {steps} updates", flush=True)
                if subprocess_runner(stage_overrides(overrides, run_dir)) != 0:
                    return 1
        chain = out / "spt" / f"seed{seed}"
        status = run_chain(
            experiment,
            [f"seed={seed}", *shared],
            [f"trainer.max_steps={args.pretrain_steps}"],
            [f"trainer.max_steps={args.finetune_steps}"],
            chain,
        )
        if status != 0:
            return status
        arms = [accuracy(scratch), accuracy(short), accuracy(chain / "finetune")]
        rows.append((seed, arms, accuracy(chain / "pretrain")[2]))

    lines = [
        f"{experiment} {' '.join(shared)}: test accuracy (%) of the best-validation checkpoint (best validation "
        "accuracy in brackets)",
        "",
        f"| seed | from scratch, {total} updates | from scratch, {args.finetune_steps} updates | SPT "
        f"{args.pretrain_steps} + fine-tuning {args.finetune_steps} updates | wall s: scratch {total} / SPT chain |",
        "|---|---|---|---|---|",
    ]
    for seed, arms, pretrain_wall in rows:
        cells = " | ".join(f"{100 * test:.1f} ({100 * val:.1f})" for test, val, _ in arms)
        lines.append(f"| {seed} | {cells} | {arms[0][2]:.0f} / {pretrain_wall + arms[2][2]:.0f} |")
    names = ("scratch", "scratch_finetune_budget", "spt")
    tests = {name: [arms[i][0] for _, arms, _ in rows] for i, name in enumerate(names)}
    lines.append(f"| mean ± std | {' | '.join(mean_std(values) for values in tests.values())} | |")
    text = "\n".join(lines)
    print(text)
    (out / "comparison.md").write_text(text + "\n")
    (out / "comparison.json").write_text(json.dumps({"experiment": experiment, "overrides": shared, **tests}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
