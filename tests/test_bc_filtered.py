"""%BC's trajectory filter and loss, and the trainer contract (compiled update, exported policy, checkpoint state)."""

import copy

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


@pytest.mark.parametrize("frac", [0.0, 1.5])
def test_a_bad_fraction_is_refused_by_the_config(frac):
    with pytest.raises(SystemExit, match=r"frac must be in \(0, 1\]"):
        bc_filtered.TrainConfig(frac=frac)


def test_actor_loss_is_squared_error_summed_over_action_dims():
    actor = bc_filtered.Actor(1, 2, 4, max_action=1.0)
    states = torch.zeros(2, 1)
    actions = torch.tensor([[0.5, -0.5], [0.0, 1.0]])
    pred = actor(states)
    expected = ((pred - actions) ** 2).sum(-1).mean()
    assert bc_filtered.actor_loss(actor, states, actions).item() == pytest.approx(expected.item())


def make_bc_trainer(**overrides):
    config = bc_filtered.TrainConfig(device="cpu", hidden_dim=32, batch_size=16, max_steps=100, **overrides)
    return bc_filtered.Trainer(3, 2, 1.0, config, torch.device("cpu"))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def test_update_is_adam_on_the_actor_loss():
    torch.manual_seed(0)
    trainer = make_bc_trainer()
    reference = copy.deepcopy(trainer.actor)
    optimizer = torch.optim.Adam(reference.parameters(), lr=3e-4)
    for step in range(1, 4):
        batch = random_batch()
        trainer.update(batch, step)
        optimizer.zero_grad()
        bc_filtered.actor_loss(reference, batch["observations"], batch["actions"]).backward()
        optimizer.step()
    for p, q in zip(trainer.actor.parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)
