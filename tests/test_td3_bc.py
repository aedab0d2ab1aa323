"""TD3+BC's lambda normalization and losses (Fujimoto & Gu 2021, eq. 3-4), its delayed actor update, and the
trainer contract (compiled update, exported policy, checkpoint state)."""

import copy

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
    assert td3_bc.actor_loss(q, pi, a, alpha=2.5, max_action=1.0, bc_coef=1.0).item() == pytest.approx(1.25 / 3)
    # the BC term is measured in units of max_action: the same actions scaled by 2 give the same loss
    assert td3_bc.actor_loss(q, 2 * pi, 2 * a, alpha=2.5, max_action=2.0, bc_coef=1.0).item() == pytest.approx(1.25 / 3)
    q2 = torch.tensor([4.0, 4.0, 4.0])
    assert td3_bc.actor_loss(q2, pi, a, alpha=2.5, max_action=1.0, bc_coef=1.0).item() == pytest.approx(-2.5 + 1.25 / 3)


def test_lambda_makes_the_actor_loss_invariant_to_q_scale():
    pi = torch.zeros(4, 1, requires_grad=True)
    a = torch.ones(4, 1)
    grads = []
    for scale in (1.0, 1000.0):
        q = scale * (pi.sum(-1) + torch.tensor([1.0, 2.0, 3.0, 4.0]))
        (g,) = torch.autograd.grad(td3_bc.actor_loss(q, pi, a, alpha=2.5, max_action=1.0, bc_coef=1.0), pi)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4)


def test_target_uses_clipped_noise_and_the_smaller_critic():
    torch.manual_seed(0)
    actor = td3_bc.Actor(1, 1, 4, max_action=1.0, sigma=0.1)
    critic = td3_bc.EnsembleCritic(1, 1, 4)
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()
        critic.net[-1].bias[0].fill_(3.0)  # Q_1 = 3
        critic.net[-1].bias[1].fill_(-1.0)  # Q_2 = -1
    batch = {"next_observations": torch.zeros(5, 1), "rewards": torch.ones(5),
             "terminals": torch.tensor([0., 0, 0, 0, 1])}
    y = td3_bc.bellman_target(critic, actor, batch, gamma=0.5, sigma=100.0, c=0.5)
    assert y.tolist() == pytest.approx([1 - 0.5, 1 - 0.5, 1 - 0.5, 1 - 0.5, 1.0])


def test_target_noise_is_clipped_to_c():
    torch.manual_seed(0)
    actor = td3_bc.Actor(1, 1, 4, max_action=2.0, sigma=0.1)
    critic = td3_bc.EnsembleCritic(1, 1, 4)
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()
        critic.net[0].weight[:, 1, :].fill_(1.0)  # Q_i(s, a) = a + 10 through the hidden layers
        critic.net[0].bias.fill_(10.0)
        critic.net[2].weight[:, 0, :].fill_(1.0)
        critic.net[-1].weight[:, 0, :].fill_(1.0)
    batch = {"next_observations": torch.zeros(200, 1), "rewards": torch.zeros(200), "terminals": torch.zeros(200)}
    with torch.no_grad():
        smoothed = td3_bc.bellman_target(critic, actor, batch, gamma=1.0, sigma=100.0, c=0.3)
        plain = actor(batch["next_observations"][:1]).item() + 10.0
    # y = pi(s') + noise + 10: sigma = 100 puts nearly every draw at the clip, and none beyond it
    assert (smoothed - plain).abs().max().item() <= 0.3 + 1e-5
    assert (smoothed - plain).abs().max().item() == pytest.approx(0.3, abs=1e-5)


def make_td3_bc_trainer(**overrides):
    config = td3_bc.TrainConfig(device="cpu", hidden_dim=32, batch_size=16, max_steps=100, **overrides)
    return td3_bc.Trainer(3, 2, 1.0, config, torch.device("cpu"))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def test_delayed_actor_update_reproduces_the_authors_loop():
    """The update equals TD3_BC.py's train(): the critic steps every time, the actor (with torch.optim.Adam)
    and both targets only when total_it % policy_freq == 0; compared over five updates, policy_freq 2."""
    torch.manual_seed(0)
    trainer = make_td3_bc_trainer(actor_lr=1e-2, critic_lr=1e-2, tau=0.1)
    actor, critic = copy.deepcopy(trainer.actor), copy.deepcopy(trainer.critic)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_opt, critic_opt = torch.optim.Adam(actor.parameters(), 1e-2), torch.optim.Adam(critic.parameters(), 1e-2)
    for total_it in range(1, 6):
        batch = random_batch()
        torch.manual_seed(total_it)
        metrics = trainer.update(batch, total_it)
        assert ("actor_loss" in metrics) == (total_it % 2 == 0)
        torch.manual_seed(total_it)
        with torch.no_grad():
            y = td3_bc.bellman_target(critic_target, actor_target, batch, 0.99, 0.2, 0.5)
        critic_opt.zero_grad()
        td3_bc.critic_loss(critic, batch, y).backward()
        critic_opt.step()
        if total_it % 2 == 0:
            pi = actor(batch["observations"])
            actor_opt.zero_grad()
            td3_bc.actor_loss(critic(batch["observations"], pi)[0], pi, batch["actions"], 2.5, 1.0, 1.0).backward()
            actor_opt.step()
            with torch.no_grad():
                for net, target in ((critic, critic_target), (actor, actor_target)):
                    for p, p_target in zip(net.parameters(), target.parameters()):
                        p_target.copy_(0.1 * p + 0.9 * p_target)
        for mine, reference in ((trainer.actor, actor), (trainer.critic, critic), (trainer.actor_target, actor_target),
                                (trainer.critic_target, critic_target)):
            for p, q in zip(mine.parameters(), reference.parameters()):
                assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), total_it
    assert trainer.actor_optimizer.state_dict()["state"][0]["step"].item() == 2
    assert trainer.critic_optimizer.state_dict()["state"][0]["step"].item() == 5


def test_without_the_bc_term_the_actor_loss_is_td3s():
    """bc_coef = 0 (the extrapolation-error ablation): only -lambda Q remains, whatever the data actions."""
    q, pi = torch.tensor([1.0, 3.0]), torch.tensor([[0.5], [-0.5]])
    far, near = torch.tensor([[-1.0], [1.0]]), pi.clone()
    assert td3_bc.actor_loss(q, pi, far, 2.5, 1.0, bc_coef=0.0).item() == pytest.approx(-2.5)
    assert td3_bc.actor_loss(q, pi, far, 2.5, 1.0, 0.0).item() == td3_bc.actor_loss(q, pi, near, 2.5, 1.0, 0.0).item()
