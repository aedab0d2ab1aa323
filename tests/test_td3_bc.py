"""TD3+BC's lambda normalization and losses (Fujimoto & Gu 2021, eq. 3-4)."""

import pytest
import torch

import td3_bc


def test_lambda_is_alpha_over_mean_absolute_q_and_carries_no_gradient():
    q = torch.tensor([1.0, -3.0, 2.0], requires_grad=True)
    lam = td3_bc.bc_lambda(q, alpha=2.5)
    assert lam.item() == pytest.approx(2.5 / 2.0)
    assert not lam.requires_grad


def test_actor_loss_is_minus_lambda_q_plus_bc():
    q = torch.tensor([1.0, -3.0, 2.0])
    pi = torch.tensor([[0.5], [0.0], [-0.5]])
    a = torch.tensor([[0.0], [0.0], [0.5]])
    # -lambda * mean Q + mean (pi - a)^2 = -(2.5 / 2) * 0 + (0.25 + 0 + 1) / 3
    assert td3_bc.actor_loss(q, pi, a, alpha=2.5, max_action=1.0).item() == pytest.approx(1.25 / 3)
    # the BC term is measured in units of max_action: the same actions scaled by 2 give the same loss
    assert td3_bc.actor_loss(q, 2 * pi, 2 * a, alpha=2.5, max_action=2.0).item() == pytest.approx(1.25 / 3)
    q2 = torch.tensor([4.0, 4.0, 4.0])
    assert td3_bc.actor_loss(q2, pi, a, alpha=2.5, max_action=1.0).item() == pytest.approx(-2.5 + 1.25 / 3)


def test_lambda_makes_the_actor_loss_invariant_to_q_scale():
    pi = torch.zeros(4, 1, requires_grad=True)
    a = torch.ones(4, 1)
    grads = []
    for scale in (1.0, 1000.0):
        q = scale * (pi.sum(-1) + torch.tensor([1.0, 2.0, 3.0, 4.0]))
        (g,) = torch.autograd.grad(td3_bc.actor_loss(q, pi, a, alpha=2.5, max_action=1.0), pi)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4)


def test_target_uses_clipped_noise_and_the_smaller_critic():
    torch.manual_seed(0)
    config = td3_bc.TrainConfig(policy_noise=100.0, noise_clip=0.5, gamma=0.5)
    actor = td3_bc.Actor(1, 1, 4, max_action=1.0)
    critic = td3_bc.EnsembleCritic(1, 1, 4)
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()
        critic.net[-1].bias[0].fill_(3.0)  # Q_1 = 3
        critic.net[-1].bias[1].fill_(-1.0)  # Q_2 = -1
    batch = {"next_observations": torch.zeros(5, 1), "rewards": torch.ones(5), "terminals": torch.tensor([0., 0, 0, 0, 1])}
    y = td3_bc.td3_target(critic, actor, batch, config, max_action=1.0)
    assert y.tolist() == pytest.approx([1 - 0.5, 1 - 0.5, 1 - 0.5, 1 - 0.5, 1.0])
