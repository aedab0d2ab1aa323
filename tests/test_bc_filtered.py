"""%BC's trajectory filter and loss."""

import numpy as np
import pytest
import torch

import bc_filtered


def test_top_fraction_keeps_whole_best_trajectories():
    ids = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    returns = np.array([5, 5, 9, 9, 9, -1, 7, 7], np.float32)
    assert bc_filtered.top_trajectories(ids, returns, 0.5).tolist() == [0, 0, 1, 1, 1, 0, 1, 1]
    assert bc_filtered.top_trajectories(ids, returns, 0.1).tolist() == [0, 0, 1, 1, 1, 0, 0, 0]  # at least one
    assert bc_filtered.top_trajectories(ids, returns, 1.0).all()


def test_top_fraction_rejects_a_bad_fraction():
    with pytest.raises(SystemExit, match="frac"):
        bc_filtered.top_trajectories(np.zeros(3), np.zeros(3), 0.0)


def test_bc_loss_is_squared_error_summed_over_action_dims():
    actor = bc_filtered.Actor(1, 2, 4, max_action=1.0)
    states = torch.zeros(2, 1)
    actions = torch.tensor([[0.5, -0.5], [0.0, 1.0]])
    pred = actor(states)
    expected = ((pred - actions) ** 2).sum(-1).mean()
    assert bc_filtered.bc_loss(actor, states, actions).item() == pytest.approx(expected.item())
