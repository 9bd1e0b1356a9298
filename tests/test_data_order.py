"""The data order: the same global batches as the DataLoader it replaced, on any number of ranks,
and a pass resumed at step k that replays the rest of the same pass."""

import pytest
import torch
from torch.utils.data import DataLoader

from zoo.data_order import EpochBatches


def old_loader_batches(n, batch, seed, steps, epochs):
    """What `DataLoader(shuffle=True, generator=g)` and the old loop (one read past the cap,
    then break) visited."""
    loader = DataLoader(list(range(n)), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    out = []
    for _ in range(epochs):
        seen = []
        for step, x in enumerate(loader):
            if step >= steps:
                break
            seen.append(x.tolist())
        out.append(seen)
    return out


@pytest.mark.parametrize("n,batch,steps", [(10, 3, 99), (12, 3, 99), (10, 3, 2), (10, 3, 3), (12, 3, 3),
                                           (12, 3, 1), (7, 7, 99), (5, 8, 99)])
def test_same_batches_as_the_dataloader_it_replaced(n, batch, steps):
    order = EpochBatches(n, batch, seed=3, steps=steps)
    got = [list(order) for _ in range(4)]
    assert got == old_loader_batches(n, batch, 3, steps, 4)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_share_each_global_batch(world):
    one = EpochBatches(11, 4, seed=1)
    ranks = [EpochBatches(11, 4, seed=1, rank=r, world=world) for r in range(world)]
    for _ in range(3):
        whole = list(one)
        shares = [list(r) for r in ranks]
        for i, batch in enumerate(whole):
            assert [j for s in shares for j in s[i]] == batch  # contiguous, in rank order
            sizes = [len(s[i]) for s in shares]
            assert max(sizes) - min(sizes) <= 1


def test_a_resumed_pass_replays_the_rest_of_the_same_pass():
    order = EpochBatches(20, 3, seed=5)
    list(order)  # epoch 0
    state = order.state()
    full = list(order)  # epoch 1
    after = list(order)  # epoch 2
    resumed = EpochBatches(20, 3, seed=999)
    resumed.set_state(state, skip=4)
    assert len(resumed) == len(full) - 4
    assert list(resumed) == full[4:]
    assert list(resumed) == after  # and the pass after it is the uninterrupted run's


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError):
        EpochBatches(10, 2, seed=0, rank=2, world=2)


def test_the_initialisation_batch_is_the_one_the_old_loop_peeked():
    loader = DataLoader(list(range(10)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2))
    peeked = next(iter(loader)).tolist()
    after = [x.tolist() for x in loader]
    order = EpochBatches(10, 4, seed=2)
    assert order.first_batch() == peeked
    assert list(order) == after
