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
