"""Cost per generated token with the decoding cache vs one full forward pass over the prefix (CPU, 1 thread).

python -m experiments.lm_decode [--prefixes 128 1024 4096] [--chunk 128]
"""

from __future__ import annotations

import argparse
import time

import torch

import mega


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lm = mega.MegaForCausalLM(
        vocab_size=257,
        pad_token_id=0,
        hidden_size=128,
        num_hidden_layers=4,
        intermediate_size=256,
        shared_representation_size=64,
        nffn_hidden_size=256,
        ema_projection_size=16,
        chunk_size=args.chunk,
        max_positions=max(args.chunk, 1),
        relative_positional_bias="simple" if args.chunk > 0 else "rotary",
    ).eval()
    print(
        f"causal MEGA, 4 layers, D=128, chunk {args.chunk}; median of {args.steps} cached steps, 3 full passes"
    )
    with torch.no_grad():
        for prefix in args.prefixes:
            ids = torch.randint(1, 257, (1, prefix + args.steps))
            cache = mega.DecoderCache()
            lm(ids[:, :prefix], cache=cache)
            steps = []
            for position in range(prefix, prefix + args.steps):
                started = time.perf_counter()
                lm(ids[:, position : position + 1], cache=cache)
                steps.append(time.perf_counter() - started)
            full = []
            for _ in range(3):
                started = time.perf_counter()
                lm(ids[:, : prefix + 1])
                full.append(time.perf_counter() - started)
            print(
                f"prefix {prefix:5d}: cached step {sorted(steps)[len(steps) // 2] * 1e3:7.1f} ms/token   "
                f"full forward over prefix+1 {sorted(full)[1] * 1e3:8.1f} ms"
            )


if __name__ == "__main__":
    main()
