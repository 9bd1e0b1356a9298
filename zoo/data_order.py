"""The order in which a run visits its training examples: one object that resume and
data-parallel training both read.

``EpochBatches`` is a batch sampler. Each pass (epoch) it draws a permutation of the training
split from its own generator and yields the recipe's global batches in that order, or, for one
rank of ``world`` processes, that rank's contiguous share of each global batch. So every process
count sees the same global batches, and a run resumed at step k of an epoch replays the same
permutation from the generator state saved at the epoch's start and skips k batches without
reading them.

The draws are those that ``DataLoader(shuffle=True, generator=g)`` made before this sampler
existed (an int64 for the workers' base seed, the permutation, and a second permutation when the
epoch ran to the end of the split, which PyTorch's ``RandomSampler`` draws when it is exhausted),
so every recipe keeps the data order, and the results, it had. They are made when the pass
starts, not lazily, so DataLoader workers prefetching ahead cannot change them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def share(batch: list, rank: int, world: int) -> list:
    """Rank ``rank``'s contiguous part of a global batch (sizes differ by at most one, the first
    ranks taking the extra examples; a rank's part of a tiny last batch may be empty)."""
    size, extra = divmod(len(batch), world)
    start = rank * size + min(rank, extra)
    return batch[start:start + size + (rank < extra)]


class EpochBatches(Sampler[list[int]]):
    def __init__(self, n: int, batch_size: int, seed: int, steps: int | None = None,
                 rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.n, self.batch_size, self.rank, self.world = int(n), int(batch_size), rank, world
        self.batches = math.ceil(self.n / self.batch_size)
        self.steps = self.batches if steps is None else min(int(steps), self.batches)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.skip = 0  # batches of the next pass to leave out (a resumed epoch)

    def __len__(self) -> int:
        return self.steps - self.skip

    def state(self) -> torch.Tensor:
        """The generator's state before the next pass: with a step count, where a run is."""
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor, skip: int = 0) -> None:
        self.generator.set_state(state)
        self.skip = int(skip)

    def global_batch(self, order: list[int], index: int) -> list[int]:
        return order[index * self.batch_size:(index + 1) * self.batch_size]

    def first_batch(self) -> list[int]:
        """This rank's share of the first batch of a pass drawn now, for a data-dependent
        initialisation: the draws of the one batch that the old loop read for it."""
        return share(self.global_batch(self._draw_order(), 0), self.rank, self.world)

    def _draw_order(self) -> list[int]:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # the old base seed
        return torch.randperm(self.n, generator=self.generator).tolist()

    def _old_loop_exhausted(self) -> bool:
        # The old loop read one batch past a max_steps_per_epoch cap before it stopped; that read
        # exhausted the sampler when it was the split's last batch and a partial one.
        last_partial = self.n % self.batch_size != 0
        return self.steps >= self.batches or (self.steps == self.batches - 1 and last_partial)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._draw_order()
        if self._old_loop_exhausted():
            torch.randperm(self.n, generator=self.generator)  # RandomSampler's draw at exhaustion
        skip, self.skip = self.skip, 0
        return iter([share(self.global_batch(order, i), self.rank, self.world)
                     for i in range(skip, self.steps)])
