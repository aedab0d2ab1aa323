"""IQL's losses against hand computations (Kostrikov et al. 2022, eqs. 5-7)."""

import math

import numpy as np
import pytest
import torch

import iql


def test_expectile_loss_is_asymmetric():
    # L_2^tau(u) = |tau - 1(u < 0)| u^2: positive errors weigh tau, negative ones 1 - tau.
    u = torch.tensor([2.0, -2.0])
    assert iql.expectile_loss(u[:1], 0.7).item() == pytest.approx(0.7 * 4)
    assert iql.expectile_loss(u[1:], 0.7).item() == pytest.approx(0.3 * 4)
    assert iql.expectile_loss(u, 0.5).item() == pytest.approx(0.5 * 4)  # tau = 1/2: half the MSE


def test_expectile_regression_recovers_an_upper_expectile():
    # Minimizing the loss over a constant v gives the tau-expectile of the samples, above the mean for tau > 1/2.
    q = torch.tensor([0.0, 1.0, 2.0, 10.0])
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.1)
    for _ in range(2000):
        opt.zero_grad()
        iql.expectile_loss(q - v, 0.9).backward()
        opt.step()
    # tau-expectile e solves tau * sum_{q>e}(q - e) = (1 - tau) * sum_{q<e}(e - q); for e in (2, 10):
    # 0.9 (10 - e) = 0.1 (3e - 3)  ->  e = 9.3 / 1.2
    assert v.item() == pytest.approx(9.3 / 1.2, abs=1e-3)


def test_awr_weights_are_clipped():
    adv = torch.tensor([-1.0, 0.0, 1.0, 5.0])
    w = iql.awr_weights(adv, beta=3.0, max_weight=100.0)
    assert w.tolist() == pytest.approx([math.exp(-3), 1.0, math.exp(3), 100.0])


def test_q_loss_bootstraps_from_v_and_stops_at_terminals():
    critic = iql.EnsembleCritic(1, 1, 4)
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()
    batch = {"observations": torch.zeros(2, 1), "actions": torch.zeros(2, 1),
             "rewards": torch.tensor([1.0, 1.0]), "terminals": torch.tensor([0.0, 1.0])}
    next_v = torch.tensor([10.0, 10.0])
    # Q = 0 for both critics; targets 1 + 0.9 * 10 = 10 and 1 -> per critic mean (100 + 1) / 2, summed over 2
    assert iql.q_loss(critic, batch, next_v, gamma=0.9).item() == pytest.approx(2 * (100 + 1) / 2)


def test_policy_loss_is_weighted_negative_log_likelihood():
    policy = iql.GaussianPolicy(2, 1, 8, max_action=1.0)
    batch = {"observations": torch.randn(3, 2), "actions": torch.rand(3, 1) * 2 - 1}
    weights = torch.tensor([1.0, 0.0, 2.0])
    log_prob = policy.log_prob(batch["observations"], batch["actions"])
    expected = -(weights * log_prob).mean()
    assert iql.policy_loss(policy, batch, weights).item() == pytest.approx(expected.item())


def make_iql_trainer(**overrides):
    config = iql.TrainConfig(device="cpu", hidden_dim=32, batch_size=16, max_steps=100, **overrides)
    return iql.IQLTrainer(3, 2, 1.0, config, torch.device("cpu"))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def test_compiled_update_matches_eager():
    from conftest import assert_compiled_matches_eager

    assert_compiled_matches_eager(make_iql_trainer, lambda trainer: random_batch())


def test_policy_export_matches_trainer(tmp_path):
    from conftest import assert_export_matches_policy

    assert_export_matches_policy(iql, make_iql_trainer(), 3, tmp_path)


def test_checkpoint_state_round_trips():
    a, b = make_iql_trainer(), make_iql_trainer()
    a.update(random_batch())
    b.load_state_dict(a.state_dict())
    from conftest import tensors_of

    b_state = dict(tensors_of(b.state_dict()))
    for path, tensor in tensors_of(a.state_dict()):
        assert torch.equal(tensor, b_state[path]), path


def test_iql_never_queries_an_action_outside_the_dataset():
    """The chapter's claim, checked on the update itself: every call of the critics (online and target)
    during an update is at a dataset pair (s, a) of the batch; no a' ~ pi, no max over actions."""
    trainer = make_iql_trainer()
    batch = random_batch()
    queried = []

    def record(module, args):
        queried.append(args[1])

    hooks = [trainer.critic.register_forward_pre_hook(record), trainer.critic_target.register_forward_pre_hook(record)]
    trainer.update(batch)
    for hook in hooks:
        hook.remove()
    assert len(queried) == 2  # the target critic for L_V and the advantages, the online critic for L_Q
    for actions in queried:
        assert torch.equal(actions, batch["actions"])
