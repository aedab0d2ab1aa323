"""IQL's losses against hand computations (Kostrikov et al. 2022, eqs. 5-7), its update against the paper's loop
with the actor's cosine schedule, and the trainer contract (compiled update, exported policy, checkpoint state)."""

import copy

import math

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


def test_inverse_temperature_weights_are_clipped():
    adv = torch.tensor([-1.0, 0.0, 1.0, 5.0])
    w = iql.inverse_temperature_weights(adv, beta=3.0, max_weight=100.0)
    assert w.tolist() == pytest.approx([math.exp(-3), 1.0, math.exp(3), 100.0])


def test_critic_loss_bootstraps_from_v_and_stops_at_terminals():
    critic, value = iql.EnsembleCritic(1, 1, 4), iql.mlp(1, 1, 4)
    with torch.no_grad():
        for p in [*critic.parameters(), *value.parameters()]:
            p.zero_()
        value[-1].bias.fill_(10.0)  # V(s') = 10
    batch = {"observations": torch.zeros(2, 1), "actions": torch.zeros(2, 1), "next_observations": torch.zeros(2, 1),
             "rewards": torch.tensor([1.0, 1.0]), "terminals": torch.tensor([0.0, 1.0])}
    y = iql.bellman_target(value, batch, gamma=0.9)
    assert y.tolist() == pytest.approx([1 + 0.9 * 10, 1.0])
    # Q = 0 for both critics; targets 10 and 1 -> per critic mean (100 + 1) / 2, summed over 2
    assert iql.critic_loss(critic, batch, y).item() == pytest.approx(2 * (100 + 1) / 2)


def test_actor_loss_is_weighted_negative_log_likelihood():
    policy = iql.GaussianPolicy(2, 1, 8, max_action=1.0)
    batch = {"observations": torch.randn(3, 2), "actions": torch.rand(3, 1) * 2 - 1}
    weights = torch.tensor([1.0, 0.0, 2.0])
    log_prob = policy.log_prob(batch["observations"], batch["actions"])
    expected = -(weights * log_prob).mean()
    assert iql.actor_loss(policy, batch, weights).item() == pytest.approx(expected.item())


def make_iql_trainer(**overrides):
    config = iql.TrainConfig(**{"device": "cpu", "hidden_dim": 32, "batch_size": 16, "max_steps": 100, **overrides})
    return iql.Trainer(3, 2, 1.0, config, torch.device("cpu"))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def test_update_reproduces_the_papers_loop_with_a_cosine_actor_schedule():
    """The update equals Algorithm 1 of Kostrikov et al. 2022 written out as a plain torch.optim loop, in this script's
    order: V from the target critics, Q from V(s') before V's step, the AWR weights from V after it, the actor's lr
    actor_lr * (1 + cos(pi t / max_steps)) / 2 at its t-th update (t = 0, 1, ...), then Polyak on the critics."""
    torch.manual_seed(0)
    max_steps, lr, tau, gamma = 6, 1e-2, 0.1, 0.99
    trainer = make_iql_trainer(max_steps=max_steps, actor_lr=lr, critic_lr=lr, value_lr=lr, tau=tau)
    actor, critic, value = copy.deepcopy(trainer.actor), copy.deepcopy(trainer.critic), copy.deepcopy(trainer.value)
    critic_target = copy.deepcopy(critic)
    actor_opt, critic_opt, value_opt = (torch.optim.Adam(net.parameters(), lr) for net in (actor, critic, value))
    for t in range(max_steps):
        batch = random_batch()
        trainer.update(batch, t + 1)
        states = batch["observations"]
        with torch.no_grad():
            next_v = value(batch["next_observations"]).squeeze(-1)
            q = critic_target(states, batch["actions"]).min(0).values
        value_opt.zero_grad()
        iql.expectile_loss(q - value(states).squeeze(-1), 0.7).backward()
        value_opt.step()
        target = batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_v
        critic_opt.zero_grad()
        (critic(states, batch["actions"]) - target).pow(2).mean(1).sum().backward()
        critic_opt.step()
        with torch.no_grad():
            weights = torch.exp(3.0 * (q - value(states).squeeze(-1))).clamp(max=100.0)
        actor_opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / max_steps))
        actor_opt.zero_grad()
        (-(weights * actor.log_prob(states, batch["actions"])).mean()).backward()
        actor_opt.step()
        with torch.no_grad():
            for p, p_target in zip(critic.parameters(), critic_target.parameters()):
                p_target.copy_(tau * p + (1 - tau) * p_target)
        for mine, reference in ((trainer.actor, actor), (trainer.critic, critic), (trainer.value, value),
                                (trainer.critic_target, critic_target)):
            for p, p_reference in zip(mine.parameters(), reference.parameters()):
                assert torch.allclose(p, p_reference, rtol=1e-4, atol=1e-6), t
    assert float(trainer.actor_optimizer.param_groups[0]["lr"]) == pytest.approx(0.0, abs=1e-9)  # cos(pi) at max_steps


def test_fine_tuning_keeps_the_actor_lr_constant():
    """With an online phase the actor's lr is not annealed, in either phase (the authors' fine-tuning config)."""
    trainer = make_iql_trainer(max_steps=3, online_steps=10)
    for step in range(1, 7):
        trainer.update(random_batch(), step)
    assert float(trainer.actor_optimizer.param_groups[0]["lr"]) == pytest.approx(3e-4, rel=1e-6)


def test_checkpoint_state_round_trips_and_resumes_the_schedule(tmp_path):
    """A state saved and loaded as checkpoints are (torch.load with weights_only=True) restores every tensor and the
    actor's schedule: the next update of the copy equals the original's."""
    a, b = make_iql_trainer(), make_iql_trainer()
    a.update(random_batch(), 1)
    a.update(random_batch(), 2)
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    from conftest import tensors_of

    b_state = dict(tensors_of(b.state_dict()))
    for path, tensor in tensors_of(a.state_dict()):
        assert torch.equal(tensor, b_state[path]), path
    assert b.actor_scheduler.last_epoch == a.actor_scheduler.last_epoch == 2
    batch = random_batch()
    a.update(batch, 3)
    b.update(batch, 3)
    assert torch.equal(a.actor_optimizer.param_groups[0]["lr"], b.actor_optimizer.param_groups[0]["lr"])
    for p, q in zip(a.actor.parameters(), b.actor.parameters()):
        assert torch.equal(p, q)


def test_iql_never_queries_an_action_outside_the_dataset():
    """The chapter's claim, checked on the update itself: every call of the critics (online and target)
    during an update is at a dataset pair (s, a) of the batch; no a' ~ pi, no max over actions."""
    trainer = make_iql_trainer()
    batch = random_batch()
    queried = []

    def record(module, args):
        queried.append(args[1])

    hooks = [trainer.critic.register_forward_pre_hook(record), trainer.critic_target.register_forward_pre_hook(record)]
    trainer.update(batch, 1)
    for hook in hooks:
        hook.remove()
    assert len(queried) == 2  # the target critic for L_V and the advantages, the online critic for L_Q
    for actions in queried:
        assert torch.equal(actions, batch["actions"])
