"""One command that checks a GPU end to end and writes what it found into BENCHMARKS.md (`make gpu-check`).

    python -m experiments.gpu_check                      # on CUDA: every section at full size (≈ 8 min on one GPU)
    python -m experiments.gpu_check --device cpu         # the same code at reduced sizes (the test suite runs it)
    python -m experiments.gpu_check --sections parity training --no-markdown

Sections:
- parity: the model on the device against CPU float32: encoder outputs and gradients in fp32, the same under bf16
  and fp16 autocast (judged against the error CPU autocast makes), the causal LM's cached decoding with
  cross-attention against CPU's full pass.
- training: the ListOps demo (`experiment=lra_listops_demo`) trained for 200 steps from the same seed in
  `bf16-mixed` and in `32-true`: test loss and accuracy, steps/s (each run is a `python train.py` process).
- efficiency: `experiments.efficiency` on the device (Transformer, MEGA, Mega-chunk on Text, 1K-16K, batch 25 as the
  paper's Table 2; steps/s, peak memory and the ratios next to the paper's).
- recipes: every Appendix D recipe (conf/experiment, not the demos): one timed training step at the recipe's batch
  and length, samples/s, peak memory, and the projected wall time of the recipe's updates.

`--device cpu` ("reduced" scale) shrinks every size (stand-in data and a few steps, short sequences, batch 1) so
that the whole command runs in the test suite; `--scale full` runs the real sizes on any device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from experiments import efficiency, harness, publish
from experiments.harness import REPO_ROOT, Job, run_job
from experiments.publish import fmt, markdown_table, ratio

SECTIONS = ("parity", "training", "efficiency", "recipes")
RECIPES = sorted(
    p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml") if not p.stem.endswith("_demo")
)
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
FLOAT32_TOLERANCE = (
    1e-4  # relative: float32 on another device differs by reduction order and FFT library only
)
# a device's half-precision error may be this many times CPU autocast's (the tests' yardstick: plain autograd
# under CPU autocast); above it the device rounds worse than the CPU logic the tests check
HALF_FACTOR = 2.0
TRAINING_STEPS = 200


# ---------------------------------------------------------------- parity


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.detach().double().cpu()
    return float((got.detach().double().cpu() - expected).norm() / expected.norm().clamp_min(1e-30))


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights every call, perturbed from the initialisation so that every path matters (at init the
    residual path dominates and hides what the attention and EMA compute)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def encoder_step(
    options: dict[str, Any], device: torch.device, dtype: torch.dtype | None, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states and parameter gradients of one backward of MegaEncoder (train mode, no dropout)."""
    import mega

    torch.manual_seed(0)
    encoder = randomized(mega.MegaEncoder(mega.MegaConfig(**options))).to(device).train()
    with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        hidden = encoder(ids.to(device))
    # a fixed random direction (a norm after the last layer makes mean(h²) nearly constant)
    direction = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(2)).to(device)
    (hidden.float() * direction).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in encoder.parameters() if p.grad is not None])
    return hidden.detach().float().cpu(), grads.cpu()


def lm_logits(
    options: dict[str, Any], device: torch.device, dtype: torch.dtype | None, cached: bool
) -> torch.Tensor:
    """Causal LM logits with cross-attention: one full pass, or token by token through a DecoderCache."""
    import mega

    torch.manual_seed(0)
    lm = randomized(mega.MegaForCausalLM(**options)).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, options["vocab_size"], (2, 3 * options["chunk_size"] + 3), generator=generator)
    memory = torch.randn(2, 7, options["hidden_size"], generator=generator)
    cross = {"encoder_hidden_states": memory.to(device)}
    ids = ids.to(device)
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None),
    ):
        if not cached:
            return lm(ids, **cross).logits.float().cpu()
        cache = mega.DecoderCache()
        steps = [lm(ids[:, t : t + 1], cache=cache, **cross).logits for t in range(ids.size(1))]
    return torch.cat(steps, dim=1).float().cpu()


def parity(device: torch.device, full: bool) -> list[dict[str, Any]]:
    """Rows: what was compared, the device's error against CPU float32, the bound, pass/fail."""
    size = 128 if full else 16
    length = 1024 if full else 40
    base = dict(
        vocab_size=257,
        hidden_size=size,
        num_hidden_layers=2 if full else 1,
        intermediate_size=2 * size,
        shared_representation_size=size // 2,
        nffn_hidden_size=2 * size,
        ema_projection_size=16 if full else 4,
        max_positions=length,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
    )
    ids = torch.randint(1, 257, (4 if full else 2, length), generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    rows = []
    for attention, chunk in (("full attention", -1), ("chunk", 128 if full else 8)):
        options = {**base, "chunk_size": chunk}
        exact_hidden, exact_grads = encoder_step(options, cpu, None, ids)
        hidden, grads = encoder_step(options, device, None, ids)
        for what, got, expected in (("outputs", hidden, exact_hidden), ("gradients", grads, exact_grads)):
            error = relative_error(got, expected)
            rows.append(_row(f"encoder {what}, {attention}, fp32", error, FLOAT32_TOLERANCE))
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            cpu_grads = encoder_step(options, cpu, dtype, ids)[1]
            device_grads = encoder_step(options, device, dtype, ids)[1]
            bound = HALF_FACTOR * relative_error(cpu_grads, exact_grads) + 1e-5
            error = relative_error(device_grads, exact_grads)
            rows.append(_row(f"encoder gradients, {attention}, {name} autocast", error, bound))
    lm_options = dict(
        base, chunk_size=16 if full else 4, add_cross_attention=True, max_positions=128, bidirectional=False
    )
    exact = lm_logits(lm_options, cpu, None, cached=False)
    rows.append(
        _row(
            "LM cached decoding (chunked, cross-attention), fp32",
            relative_error(lm_logits(lm_options, device, None, cached=True), exact),
            FLOAT32_TOLERANCE,
        )
    )
    bound = (
        HALF_FACTOR * relative_error(lm_logits(lm_options, cpu, torch.bfloat16, cached=True), exact) + 1e-5
    )
    error = relative_error(lm_logits(lm_options, device, torch.bfloat16, cached=True), exact)
    rows.append(_row("LM cached decoding (chunked, cross-attention), bf16 autocast", error, bound))
    return rows


def _row(check: str, error: float, bound: float) -> dict[str, Any]:
    return {"check": check, "error": error, "bound": bound, "ok": error <= bound}


# ---------------------------------------------------------------- training


def train_demo(
    precision: str, device: str, full: bool, out_dir: Path, timeout: float | None
) -> dict[str, Any]:
    """`python train.py experiment=lra_listops_demo` at `precision`; its results.json."""
    run_dir = out_dir / precision
    overrides = ["experiment=lra_listops_demo", f"trainer.precision={precision}", "logger=csv"]
    overrides += [f"hydra.run.dir={run_dir}", f"seed={1}"]
    if full:
        overrides += [
            f"trainer.max_steps={TRAINING_STEPS}",
            f"trainer.val_check_interval={TRAINING_STEPS // 2}",
        ]
    else:
        overrides += ["debug=smoke", "data.batch_size=4", "data.eval_batch_size=4"]
    if device.startswith("cuda"):
        overrides += ["trainer.accelerator=gpu", "trainer.devices=1"]
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, "train.py", *overrides],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        return {"precision": precision, "error": proc.stderr.strip().splitlines()[-1][:300]}
    results = json.loads((run_dir / "results.json").read_text())
    batch = 4 if not full else 32  # the demo's data.batch_size
    return {
        "precision": precision,
        **{k: results.get(k) for k in ("test/loss", "test/acc", "val/acc_best", "steps", "wall_seconds")},
        "steps_per_s": ratio(results.get("train/samples_per_second"), batch),
    }


# ---------------------------------------------------------------- recipes


def build_recipe_step(options: dict[str, Any], device: torch.device):
    """A step closure: one training micro-batch of the recipe (forward, cross-entropy, backward, clip, AdamW).

    options: experiment; batch_size (None: the recipe's); max_length (None: the recipe's, else at most this).
    """
    import hydra

    from experiments.summary import compose

    cfg = compose([f"experiment={options['experiment']}"])
    cap = options.get("max_length")
    if cap and cfg.data.max_length > cap:  # the model's positions follow data.max_length
        cfg = compose([f"experiment={options['experiment']}", f"data.max_length={cap}"])
    net = hydra.utils.instantiate(cfg.model).to(device).train()
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
    )
    batch, length = options.get("batch_size") or int(cfg.data.batch_size), int(cfg.data.max_length)
    generator = torch.Generator().manual_seed(options["seed"])

    def sequence() -> torch.Tensor:
        if cfg.data.input_kind == "real":
            return torch.randn(batch, length, generator=generator).to(device)
        return torch.randint(1, cfg.data.vocab_size, (batch, length), generator=generator).to(device)

    inputs = {"input": sequence(), **({"input2": sequence()} if cfg.data.dual_encoder else {})}
    labels = torch.randint(0, cfg.data.num_classes, (batch,), generator=generator).to(device)
    dtype = PRECISIONS[options["precision"]]
    clip = cfg.trainer.gradient_clip_val

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = net(**inputs)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()

    info = {
        "params": sum(p.numel() for p in net.parameters()),
        "updates": int(cfg.trainer.max_steps),
        "accumulate": int(cfg.trainer.accumulate_grad_batches),
        "length": length,
        "batch_size": batch,
    }
    return step, info


def recipes(args: argparse.Namespace, full: bool) -> list[dict[str, Any]]:
    rows = []
    for experiment in args.recipes:
        options = {
            "experiment": experiment,
            "batch_size": None if full else 1,
            "max_length": None if full else 128,
            "precision": args.precision,
            "seed": 0,
        }
        builder = "experiments.gpu_check:build_recipe_step"
        job = Job(builder, options, args.device, args.threads, args.warmup, args.repeats)
        row = {"experiment": experiment, **run_job(job, args.timeout)}
        if "median_s" in row:
            row["samples_per_s"] = row["batch_size"] / row["median_s"]
            row["projected_hours"] = row["updates"] * row["accumulate"] * row["median_s"] / 3600
            print(f"[recipes] {experiment}: {row['median_s']:.3g} s/step", flush=True)
        else:
            print(f"[recipes] {experiment}: {row['error']}", flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- report


def efficiency_arguments(args: argparse.Namespace, full: bool) -> argparse.Namespace:
    argv = ["--device", args.device, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    argv += ["--threads", str(args.threads), "--no-markdown", "--models", *args.efficiency_models]
    if not full:
        argv += ["--lengths", "64", "--batch-size", "1", "--reference-length", "64"]
    if args.timeout:
        argv += ["--timeout", str(args.timeout)]
    parsed = efficiency.parse_args(argv)
    parsed.plot = None
    return parsed


def report(results: dict[str, Any], args: argparse.Namespace, info: dict[str, Any], command: str) -> str:
    lines = [
        *publish.header(command, info, args.threads),
        f"- Scale: {args.scale}"
        + (" (reduced sizes: a check that the code runs, not figures)" if args.scale == "reduced" else ""),
    ]
    if "parity" in results:
        rows = [
            [r["check"], f"{r['error']:.2e}", f"{r['bound']:.2e}", "ok" if r["ok"] else "**FAILED**"]
            for r in results["parity"]
        ]
        lines += [
            "",
            f"**Parity** with CPU float32 (relative error; fp32 bound {FLOAT32_TOLERANCE:g}, half-precision bound "
            f"{HALF_FACTOR:g}× the error of CPU autocast on the same inputs):",
            "",
            markdown_table(["check", f"{info['device']} vs CPU fp32", "bound", "verdict"], rows),
        ]
    if "training" in results:
        rows = [
            [
                r["precision"],
                r.get("error") or r["steps"],
                fmt(r.get("test/loss"), 4),
                fmt(r.get("test/acc"), 3),
                fmt(r.get("val/acc_best"), 3),
                fmt(r.get("steps_per_s"), 3),
                fmt(r.get("wall_seconds"), 3),
            ]
            for r in results["training"]
        ]
        steps = TRAINING_STEPS if args.scale == "full" else "smoke-test"
        lines += [
            "",
            f"**Training**: ListOps demo, {steps} steps from seed 1 (test = best-validation checkpoint):",
            "",
            markdown_table(
                ["precision", "steps", "test loss", "test acc", "best val acc", "steps/s", "wall s"], rows
            ),
        ]
    if "efficiency" in results:
        rows, eff_args = results["efficiency"]
        text = efficiency.report(rows, eff_args, info, "python -m experiments.efficiency")
        body = text.split("\n", len(publish.header(command, info, args.threads)))[-1]  # no second header
        lines += ["", "**Efficiency** (`experiments.efficiency`, fp32):", "", body]
    if "recipes" in results:
        rows = [
            [
                r["experiment"],
                r.get("batch_size", "–"),
                r.get("length", "–"),
                r.get("accumulate", "–"),
                r.get("updates", "–"),
                r.get("error") or fmt(r.get("median_s")),
                fmt(r.get("samples_per_s")),
                fmt(r.get("peak_mib"), 4),
                fmt(r.get("projected_hours")),
            ]
            for r in results["recipes"]
        ]
        lines += [
            "",
            f"**Recipes** (Appendix D), one training micro-batch in {args.precision} (forward, cross-entropy, "
            "backward, clipping, AdamW) on random inputs; projected = updates × accumulation × step time "
            "(no validation, no data loading):",
            "",
            markdown_table(
                [
                    "recipe",
                    "batch",
                    "length",
                    "accumulation",
                    "updates",
                    "s/step",
                    "samples/s",
                    "peak MiB",
                    "projected hours",
                ],
                rows,
            ),
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--scale", choices=("full", "reduced"), default=None, help="default: full on CUDA")
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=RECIPES)
    parser.add_argument(
        "--efficiency-models", nargs="+", choices=efficiency.MODELS, default=list(efficiency.MODELS)
    )
    parser.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="bf16-mixed",
        help="of the recipe steps (trainer=gpu's)",
    )
    harness.add_arguments(parser, repeats=2)
    publish.add_arguments(parser)
    args = parser.parse_args(argv)
    args.device = args.device or harness.default_device()
    args.scale = args.scale or ("full" if args.device.startswith("cuda") else "reduced")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = publish.command_line("experiments.gpu_check", argv if argv is not None else sys.argv[1:])
    info = publish.machine_info(args.device)
    full = args.scale == "full"
    print(f"gpu_check on {info['device']} ({info.get('gpu') or info['cpu']}), {args.scale} scale: {command}")
    results: dict[str, Any] = {}
    if "parity" in args.sections:
        results["parity"] = parity(torch.device(args.device), full)
        for row in results["parity"]:
            print(f"[parity] {row['check']}: {row['error']:.2e} (bound {row['bound']:.2e})", flush=True)
    if "training" in args.sections:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as out_dir:
            results["training"] = [
                train_demo(p, args.device, full, Path(out_dir), args.timeout)
                for p in ("bf16-mixed", "32-true")
            ]
        for row in results["training"]:
            print(f"[training] {row}", flush=True)
    if "efficiency" in args.sections:
        eff_args = efficiency_arguments(args, full)
        results["efficiency"] = (efficiency.run(eff_args), eff_args)
    if "recipes" in args.sections:
        results["recipes"] = recipes(args, full)
    text = report(results, args, info, command)
    payload = {"machine": info, "command": command, **{k: v for k, v in results.items() if k != "efficiency"}}
    if "efficiency" in results:
        payload["efficiency"] = results["efficiency"][0]
    # its own section per device kind: a CPU run does not replace a GPU's table
    publish.write(f"gpu_check_{torch.device(args.device).type}", text, args, payload)
    return results


def failures(results: dict[str, Any]) -> list[str]:
    """What went wrong: failed parity checks, training runs or recipe steps that did not finish."""
    bad = [row["check"] for row in results.get("parity", []) if not row["ok"]]
    bad += [
        f"training {row['precision']}: {row['error']}"
        for row in results.get("training", [])
        if "error" in row
    ]
    bad += [
        f"recipe {row['experiment']}: {row['error']}" for row in results.get("recipes", []) if "error" in row
    ]
    return bad


if __name__ == "__main__":
    problems = failures(main())
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)
