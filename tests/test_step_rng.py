"""Per-step randomness (training/module.py): each (seed, rank, step, micro-batch) has its own stream,
so DDP ranks draw different timesteps and noise, and a resumed run redraws exactly what it would have."""

import torch

from ditlab.training.module import seeded_rng, step_seed

CPU = torch.device("cpu")


def draws(seed: int, rank: int, step: int, micro: int = 0) -> torch.Tensor:
    with seeded_rng(CPU, seed, rank, step, micro):
        return torch.cat([torch.randint(0, 1000, (8,)).float(), torch.randn(8)])  # timesteps, then noise


def test_ranks_steps_and_micro_batches_draw_their_own_streams():
    reference = draws(0, 0, 5)
    assert torch.equal(reference, draws(0, 0, 5))  # a resumed step redraws exactly the same
    for other in (draws(0, 1, 5), draws(0, 0, 6), draws(0, 0, 5, micro=1), draws(1, 0, 5)):
        assert not torch.equal(reference[8:], other[8:])  # rank, step, micro-batch and seed each change the noise
    # every (seed, rank) pair has its own stream at step 0
    assert len({step_seed(s, r, 0, 0) for s in range(4) for r in range(4)}) == 16


def test_the_global_generator_is_restored_after_the_step():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    draws(0, 3, 7)
    assert torch.equal(torch.rand(4), expected)  # the step's draws leave everyone else's stream untouched
