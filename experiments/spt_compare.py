"""Self-pretraining + fine-tuning against training from scratch at equal total updates, over seeds.

    python -m experiments.spt_compare experiment=lra_pathfinder_demo --seeds 1 2 3 --pretrain-steps 150 \\
        --finetune-steps 150                    # from scratch: 300 updates; SPT: 150 pretraining + 150 fine-tuning

Per seed: `train.py experiment=<e> seed=<s> trainer.max_steps=<P + F>` (from scratch) and the chain of
`experiments.spt` (`<e>_spt` for P updates, then `<e>` for F updates from it), each in its own folder under `--out`
(default `outputs/spt_compare/<e>`); finished runs are reused, killed ones resume. Prints and writes
`<out>/comparison.md` (and .json): test accuracy of the best-validation checkpoint per seed, mean ± sample std.
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
        scratch = out / "scratch" / f"seed{seed}"
        if stage_state(scratch) != "done":
            overrides = [f"experiment={experiment}", f"seed={seed}", *shared, f"trainer.max_steps={total}"]
            print(f"[compare] from scratch, seed {seed}: {total} updates", flush=True)
            if subprocess_runner(stage_overrides(overrides, scratch)) != 0:
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
        rows.append((seed, accuracy(scratch), accuracy(chain / "finetune"), accuracy(chain / "pretrain")[2]))

    lines = [
        f"{experiment}: from scratch {total} updates vs self-pretraining {args.pretrain_steps} + fine-tuning "
        f"{args.finetune_steps} updates; test accuracy (%) of the best-validation checkpoint",
        "",
        "| seed | from scratch: test (val best) | SPT + fine-tuning: test (val best) | wall s: scratch / SPT chain |",
        "|---|---|---|---|",
    ]
    for seed, (s_test, s_val, s_wall), (f_test, f_val, f_wall), p_wall in rows:
        lines.append(
            f"| {seed} | {100 * s_test:.1f} ({100 * s_val:.1f}) | {100 * f_test:.1f} ({100 * f_val:.1f}) | "
            f"{s_wall:.0f} / {p_wall + f_wall:.0f} |"
        )
    scratch_tests = [r[1][0] for r in rows]
    spt_tests = [r[2][0] for r in rows]
    lines.append(f"| mean ± std | {mean_std(scratch_tests)} | {mean_std(spt_tests)} | |")
    text = "\n".join(lines)
    print(text)
    (out / "comparison.md").write_text(text + "\n")
    (out / "comparison.json").write_text(
        json.dumps(
            {"experiment": experiment, "overrides": shared, "scratch": scratch_tests, "spt": spt_tests}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
