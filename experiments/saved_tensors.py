"""What autograd keeps for the backward, per MEGA layer, in units of one [B, L, D] float32 tensor.

    python -m experiments.saved_tensors                        # make bench's model at L=1024, chunk 128
    python -m experiments.saved_tensors --length 4096 --chunk -1

A `torch.autograd.graph.saved_tensors_hooks` pack hook sees every tensor a forward saves; each is charged to the
sub-layer (attention or NFFN of layer i) whose forward is running, once per storage (a tensor saved by several
ops, or views of it, counts once) and without parameters. Activation memory of one step is about the sum.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch import nn


def saved_bytes(model: nn.Module, run, parts: dict[str, nn.Module]) -> dict[str, int]:
    """Bytes saved for the backward while `run()` executes, charged to the running module of `parts` (name: module).

    Storages are counted once (at the first part that saves them); parameters and tensors saved outside every
    part are left out.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    totals: dict[str, int] = defaultdict(int)
    current: list[str] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if current and storage.data_ptr() not in seen | parameters:
            seen.add(storage.data_ptr())
            totals[current[-1]] += storage.nbytes()
        return tensor

    def leave(_module, _args, _output) -> None:
        current.pop()

    handles = []
    for name, part in parts.items():
        handles.append(part.register_forward_pre_hook(lambda _m, _a, name=name: current.append(name)))
        handles.append(part.register_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            run()
    finally:
        for handle in handles:
            handle.remove()
    return dict(totals)


def layer_parts(encoder: nn.Module) -> dict[str, nn.Module]:
    """{"attention i": ..., "ffn i": ...} for each block of a mega.MegaEncoder."""
    parts = {}
    for index, block in enumerate(encoder.layers):
        parts[f"attention {index}"] = block.attn
        if block.ffn is not None:
            parts[f"ffn {index}"] = block.ffn
    return parts


def per_layer_units(length: int, chunk: int, batch_size: int = 8) -> dict[str, float]:
    """Saved bytes per sub-layer of make bench's model (train mode, its dropouts), in [B, L, D] float32 units."""
    import mega
    from experiments import bench_mega

    attention = "chunk" if chunk > 0 else "full"
    options = bench_mega.model_options(length, attention, chunk, length)
    torch.manual_seed(0)
    encoder = mega.MegaEncoder(mega.MegaConfig(**options)).train()
    ids = torch.randint(2, options["vocab_size"], (batch_size, length))
    unit = batch_size * length * options["hidden_size"] * 4
    outputs = []
    totals = saved_bytes(encoder, lambda: outputs.append(encoder(ids)), layer_parts(encoder))
    return {name: value / unit for name, value in totals.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=128, help="-1: full attention")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    units = per_layer_units(args.length, args.chunk, args.batch_size)
    for name, value in units.items():
        print(f"{name:12s} {value:6.2f} × [B, L, D] float32")
    layers = len({name.split()[-1] for name in units})
    print(f"per layer    {sum(units.values()) / layers:6.2f}")
    return units


if __name__ == "__main__":
    main()
