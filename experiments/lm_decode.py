"""Cost per generated token with the decoding cache vs one full forward pass over the prefix (CPU, 1 thread).

    python -m experiments.lm_decode [--prefixes 128 1024 4096] [--chunk 128] [--steps 32] [--repeats 3]

For each prefix length: the cache is filled with the prefix, then `--steps` single-token steps are timed (the
median is the cost per token; the first step warms up), and `--repeats` full forward passes over prefix + 1 tokens
(after `--warmup` untimed ones). Timed with `experiments.harness.time_steps`; `--json` / `--markdown` publish.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

import mega
from experiments import harness, publish
from experiments.publish import markdown_table

VOCAB = 257


def language_model(chunk: int) -> mega.MegaForCausalLM:
    """A 4-layer, D = 128 causal MEGA (the size of the encoder benchmark)."""
    return mega.MegaForCausalLM(
        vocab_size=VOCAB,
        pad_token_id=0,
        hidden_size=128,
        num_hidden_layers=4,
        intermediate_size=256,
        shared_representation_size=64,
        nffn_hidden_size=256,
        ema_projection_size=16,
        chunk_size=chunk,
        max_positions=max(chunk, 1),
        relative_positional_bias="simple" if chunk > 0 else "rotary",
    ).eval()


def measure_prefix(lm: mega.MegaForCausalLM, prefix: int, args: argparse.Namespace) -> dict[str, Any]:
    """Per-token cached step and full forward pass after a `prefix`-token prompt."""
    ids = torch.randint(1, VOCAB, (1, prefix + 1 + args.steps))
    cache = mega.DecoderCache()
    lm(ids[:, :prefix], cache=cache)
    position = prefix

    def cached_step() -> None:
        nonlocal position
        lm(ids[:, position : position + 1], cache=cache)
        position += 1

    cached = harness.time_steps(cached_step, warmup=1, repeats=args.steps)
    full = harness.time_steps(lambda: lm(ids[:, : prefix + 1]), args.warmup, args.repeats)
    return {"prefix": prefix, "cached": cached, "full": full}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefixes", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32, help="cached single-token steps timed per prefix")
    harness.add_arguments(parser, repeats=3, threads=1, per_process=False)
    publish.add_arguments(parser, markdown=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    command = publish.command_line("experiments.lm_decode", argv if argv is not None else sys.argv[1:])
    info = publish.machine_info("cpu")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = language_model(args.chunk)
    with torch.no_grad():
        rows = [measure_prefix(lm, prefix, args) for prefix in args.prefixes]
    table = [
        [row["prefix"], f"{row['cached']['median_s'] * 1e3:.1f}", f"{row['full']['median_s'] * 1e3:.1f}"]
        for row in rows
    ]
    text = "\n".join(
        [
            *publish.header(command, info, args.threads),
            f"- Causal MEGA, 4 layers, D = 128, chunk {args.chunk}; median of {args.steps} cached steps and of "
            f"{args.repeats} full passes",
            "",
            markdown_table(["prefix", "cached step ms/token", "full forward over prefix + 1 (ms)"], table),
        ]
    )
    publish.write("lm_decode", text, args, {"machine": info, "command": command, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
