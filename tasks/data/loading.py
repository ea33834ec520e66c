"""Loading: the resumable train sampler and loader, and padding into Contract-1 batches (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler[int]):
    """Seeded shuffling whose position survives a checkpoint: epoch e uses permutation(seed + e), and a resumed
    run skips the batches the checkpointed run had already trained on. Shards by rank under DDP."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.num_examples, self.batch_size, self.seed, self.shuffle = num_examples, batch_size, seed, shuffle
        self.epoch = 0
        self.batches_done = 0  # batches of the current epoch already trained on (counted by the datamodule)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start; a new epoch starts from its first batch."""
        if epoch != self.epoch:
            self.epoch, self.batches_done = epoch, 0

    def _rank_and_world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_examples, generator=generator).tolist()
        else:
            order = list(range(self.num_examples))
        rank, world = self._rank_and_world()
        return order[rank::world]

    def __iter__(self) -> Iterator[int]:
        yield from self._indices()[self.batches_done * self.batch_size :]

    def __len__(self) -> int:
        # the full epoch, also on a resumed one: Lightning keeps counting batch_idx from where it stopped
        rank, world = self._rank_and_world()
        return len(range(rank, self.num_examples, world))


class ResumableLoader(DataLoader):
    """A DataLoader whose sampler position Lightning saves in and restores from checkpoints."""

    sampler: ResumableSampler

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.sampler.epoch,
            "batches_done": self.sampler.batches_done,
            "seed": self.sampler.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.epoch, self.sampler.batches_done = state["epoch"], state["batches_done"]
        self.sampler.seed = state["seed"]


def pad_sequences(
    sequences: list[torch.Tensor], multiple_of: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad to the longest sequence (rounded up to `multiple_of`) with zeros; mask is None if nothing padded."""
    lengths = [len(s) for s in sequences]
    length = max(lengths)
    if multiple_of:
        length = -(-length // multiple_of) * multiple_of
    padded = sequences[0].new_zeros((len(sequences), length))
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for i, sequence in enumerate(sequences):
        padded[i, : len(sequence)] = sequence
        mask[i, : len(sequence)] = True
    return padded, (None if bool(mask.all()) else mask)
