"""CPU time of one training step, ours vs HF's MegaModel, alternating in one process (for loaded machines).

Wall-clock timings on a shared, oversubscribed machine mostly measure waiting; process CPU time at one thread
measures the work. This complements `make bench` (wall clock, separate processes, peak memory):

    python -m experiments.mega_cputime --length 1024 --chunk 128 --batch-size 8 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from experiments.bench_mega import model_options


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=128, help="-1: full attention")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    import mega

    options = model_options(args.length, "chunk" if args.chunk > 0 else "full", args.chunk, args.length)
    models = {
        "hf": transformers.MegaModel(transformers.MegaConfig(**options), add_pooling_layer=False),
        "ours": mega.MegaEncoder(mega.MegaConfig(**options)),
    }
    ids = torch.randint(2, options["vocab_size"], (args.batch_size, args.length))
    times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, model in models.items():
            model.train().zero_grad(set_to_none=True)
            start = time.process_time()
            output = model(ids)
            getattr(output, "last_hidden_state", output).mean().backward()
            if repeat:
                times[name].append(time.process_time() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"L={args.length} chunk={args.chunk} batch={args.batch_size} threads={args.threads}: "
        f"HF {medians['hf']:.2f} s, ours {medians['ours']:.2f} s CPU per step, "
        f"speed-up {medians['hf'] / medians['ours']:.2f}x"
    )


if __name__ == "__main__":
    main()
