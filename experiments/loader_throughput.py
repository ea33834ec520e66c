"""Is the data loader ever the bottleneck? Training-loader samples/s against the model's training-step samples/s.

    python -m experiments.loader_throughput <experiment> [overrides] [--batches N] [--steps K] [--json PATH]
    python -m experiments.loader_throughput lra_image_demo --batches 30 --steps 2
    python -m experiments.loader_throughput sc_raw_demo data.num_workers=2 --steps 0    # the loader alone

The experiment is composed as `train.py` composes it (Hydra overrides included; `torch_threads` applied) and its
datamodule prepared first, so caching is not timed. Then, timed with `experiments.harness.time_steps` (one untimed
batch or step first: worker start-up and one-off allocations are not throughput):
- N training batches: samples per wall-clock second, and per CPU-second of this process (less distorted by a busy
  machine; with `data.num_workers=0` the loader runs in this process, with workers each adds about one such rate);
- K training steps of the experiment's model on one batch (forward, cross-entropy, backward, AdamW): samples/s
  from the median step. `--steps 0` times the loader alone.
Prints a Markdown row (with the command, machine and load) and the result as JSON; `--json PATH` also writes it with
the machine's description, `--markdown PATH` puts the row into that file's `loader_throughput` section.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from hydra.utils import instantiate

from experiments import harness, publish, summary
from experiments.publish import fmt, markdown_table


def measure(experiment: str, overrides: list[str], batches: int = 50, steps: int = 3) -> dict[str, Any]:
    """Loader and training-step rates of `experiment` with `overrides` (see the module docstring)."""
    cfg = summary.compose([f"experiment={experiment}", *overrides])
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)  # as train.py
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    loader = iter(datamodule.train_dataloader())
    loaded: list[dict[str, torch.Tensor]] = []

    def next_batch() -> None:
        batch = next(loader)
        if "label" not in batch:
            raise ValueError(
                f"experiment={experiment}: its batches have no `label`; this measures classifiers"
            )
        loaded.append(batch if not loaded else {"label": batch["label"]})  # keep the first for the model

    loading = harness.time_steps(next_batch, warmup=1, repeats=batches)
    first = loaded[0]
    samples = sum(len(batch["label"]) for batch in loaded[1:])  # the warm-up batch is not timed
    result: dict[str, Any] = {
        "experiment": experiment,
        "overrides": " ".join(overrides),
        "batch_size": len(first["label"]),
        "num_workers": datamodule.num_workers,
        "loader_samples_per_s": round(samples / sum(loading["times_s"]), 1),
        "loader_samples_per_cpu_s": round(samples / max(sum(loading["cpu_times_s"]), 1e-9), 1),
        "torch_threads": torch.get_num_threads(),
    }
    if steps > 0:
        net = instantiate(cfg.model)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def train_step() -> None:
            loss = torch.nn.functional.cross_entropy(net(first["input"], first.get("mask")), first["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        training = harness.time_steps(train_step, warmup=1, repeats=steps)
        step_rate = len(first["label"]) / training["median_s"]
        result.update(
            train_samples_per_s=round(step_rate, 2),
            ratio=round(result["loader_samples_per_s"] / step_rate, 1),
        )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.num_workers=2")
    parser.add_argument("--batches", type=int, default=50, help="training batches to time")
    parser.add_argument("--steps", type=int, default=3, help="training steps to time (0: the loader only)")
    publish.add_arguments(parser, markdown=None)
    args = parser.parse_intermixed_args(argv)
    command = publish.command_line(
        "experiments.loader_throughput", argv if argv is not None else sys.argv[1:]
    )
    info = publish.machine_info("cpu")
    result = measure(args.experiment, args.overrides, args.batches, args.steps)
    headers = [
        "experiment, overrides",
        "batch",
        "workers",
        "loader samples/s",
        "loader samples / CPU-s",
        "model samples/s",
    ]
    row = [
        f"`{' '.join([args.experiment, *args.overrides])}`",
        result["batch_size"],
        result["num_workers"],
        fmt(result["loader_samples_per_s"], 5),
        fmt(result["loader_samples_per_cpu_s"], 5),
        fmt(result.get("train_samples_per_s"), 4),
    ]
    text = "\n".join(
        [*publish.header(command, info, torch.get_num_threads()), "", markdown_table(headers, [row])]
    )
    publish.write("loader_throughput", text, args, {"machine": info, "command": command, "result": result})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
