"""AWAC's pieces against hand computations (Nair et al. 2020, as the authors' rlkit awac_trainer.py computes them):
the target, the advantage, the weights B softmax(A / beta) (normalized over the batch, never clipped), the policy's
squashed log std, and one whole update against the same step written out as a plain torch.optim loop."""

import copy
import math

import pytest
import torch

import awac


class FixedActor:
    """A stand-in for pi_phi whose sample() returns given actions: the hand computations know a' and a_pi."""

    def __init__(self, actions):
        self.actions = actions

    def sample(self, state):
        return self.actions


def linear_critic(state, action):
    """Q_1(s, a) = sum(a) + sum(s), Q_2(s, a) = 2 sum(a): two members, [2, B]."""
    return torch.stack([action.sum(-1) + state.sum(-1), 2 * action.sum(-1)])


def test_target_takes_the_min_of_the_target_critics_at_a_policy_sample_and_stops_at_terminals():
    batch = {"rewards": torch.tensor([1.0, 1.0, 0.5]), "terminals": torch.tensor([0.0, 1.0, 0.0]),
             "next_observations": torch.tensor([[1.0], [1.0], [-1.0]])}
    next_actions = torch.tensor([[2.0], [2.0], [0.5]])
    y = awac.bellman_target(linear_critic, FixedActor(next_actions), batch, gamma=0.9)
    # Q'_1 = a' + s' = 3, 3, -0.5; Q'_2 = 2 a' = 4, 4, 1; min = 3, 3, -0.5; the second transition is terminal.
    assert y.tolist() == pytest.approx([1 + 0.9 * 3, 1.0, 0.5 + 0.9 * -0.5])


def test_advantage_is_min_q_at_the_data_minus_min_q_at_a_policy_sample():
    states = torch.tensor([[0.0], [1.0]])
    actions = torch.tensor([[1.0], [-1.0]])
    policy_actions = torch.tensor([[0.5], [0.0]])
    advantage = awac.awac_advantage(linear_critic, FixedActor(policy_actions), states, actions)
    # min_i Q_i(s, a): min(1, 2) = 1 and min(0, -2) = -2; min_i Q_i(s, a_pi): min(0.5, 1) = 0.5 and min(1, 0) = 0.
    assert advantage.tolist() == pytest.approx([1 - 0.5, -2 - 0])


def test_weights_are_b_times_the_softmax_over_the_batch():
    advantage = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    w = awac.awac_weights(advantage, beta=2.0)
    e = [math.exp(a / 2.0) for a in advantage.tolist()]
    assert w.tolist() == pytest.approx([4 * x / sum(e) for x in e])
    assert float(w.sum()) == pytest.approx(4.0) and float(w.mean()) == pytest.approx(1.0)  # they average 1
    assert torch.allclose(awac.awac_weights(advantage + 50.0, beta=2.0), w)  # a shift of A changes nothing


def test_weights_are_not_clipped():
    """One transition far better than the rest takes nearly all of the batch's weight B = 256, far above the clip of
    100 that CORL puts on exp(A / lambda); no weight is exp(A / beta) itself (exp(100) would overflow float32)."""
    advantage = torch.zeros(256)
    advantage[7] = 200.0
    w = awac.awac_weights(advantage, beta=2.0)
    assert torch.isfinite(w).all() and float(w[7]) == pytest.approx(256.0, rel=1e-6)
    assert float(w.sum()) == pytest.approx(256.0)


def test_actor_loss_is_weighted_negative_log_likelihood():
    policy = awac.GaussianPolicy(2, 1, 8, max_action=1.0)
    batch = {"observations": torch.randn(3, 2), "actions": torch.rand(3, 1) * 2 - 1}
    weights = torch.tensor([1.0, 0.0, 2.0])
    log_prob = policy.log_prob(batch["observations"], batch["actions"])
    assert awac.actor_loss(policy, batch, weights).item() == pytest.approx(-(weights * log_prob).mean().item())


def test_policy_has_four_hidden_layers_and_a_log_std_squashed_into_minus_6_0():
    policy = awac.GaussianPolicy(3, 2, 8, max_action=2.0)
    assert sum(isinstance(m, torch.nn.Linear) for m in policy.net) == 5  # four hidden layers, then the output
    states = torch.zeros(1, 3)
    assert torch.allclose(policy.distribution(states).stddev, torch.full((1, 2), math.exp(-3.0)))  # the midpoint
    with torch.no_grad():
        policy.log_std_logit.copy_(torch.tensor([-50.0, 50.0]))
    assert torch.allclose(policy.distribution(states).stddev.log(), torch.tensor([[-6.0, 0.0]]))
    assert policy(torch.randn(100, 3)).abs().max() <= 2.0  # mean = max_action tanh(.)


def make_awac_trainer(**overrides):
    config = awac.TrainConfig(**{"device": "cpu", "hidden_dim": 32, "batch_size": 16, "max_steps": 100, **overrides})
    return awac.Trainer(3, 2, 1.0, config, torch.device("cpu"))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def test_update_reproduces_the_authors_step():
    """Three updates equal the authors' train_from_torch (alpha 0, awr_min_q, normalize_over_batch) written out as a
    plain torch.optim loop on tiny networks: a' ~ pi(s') then a_pi ~ pi(s) drawn from the same seed, y from the target
    critics, A and w from the online critics before their step, the critics' step, the policy's step with weight
    decay 1e-4 (Adam's L2), then Polyak on the critics."""
    lr, tau, gamma, beta, decay = 1e-2, 0.1, 0.99, 2.0, 1e-4
    torch.manual_seed(0)
    trainer = make_awac_trainer(actor_lr=lr, critic_lr=lr, tau=tau, gamma=gamma, beta=beta, actor_weight_decay=decay)
    actor, critic = copy.deepcopy(trainer.actor), copy.deepcopy(trainer.critic)
    critic_target = copy.deepcopy(critic)
    actor_opt = torch.optim.Adam(actor.parameters(), lr, weight_decay=decay)
    critic_opt = torch.optim.Adam(critic.parameters(), lr)

    def gaussian(states):
        mean = torch.tanh(actor.net(states))
        std = torch.exp(-6.0 + 6.0 * torch.sigmoid(actor.log_std_logit))
        return torch.distributions.Normal(mean, std)

    for step in (1, 2, 3):
        batch = random_batch()
        torch.manual_seed(10 + step)
        metrics = trainer.update(batch, step)
        torch.manual_seed(10 + step)
        s, a = batch["observations"], batch["actions"]
        with torch.no_grad():
            next_actions = gaussian(batch["next_observations"]).sample()
            next_q = torch.minimum(*critic_target(batch["next_observations"], next_actions))
            y = batch["rewards"] + gamma * (1 - batch["terminals"]) * next_q
            policy_actions = gaussian(s).sample()
            advantage = torch.minimum(*critic(s, a)) - torch.minimum(*critic(s, policy_actions))
            weights = torch.exp(advantage / beta) / torch.exp(advantage / beta).sum() * len(advantage)
        q1, q2 = critic(s, a)
        critic_opt.zero_grad()
        (((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()).backward()
        critic_opt.step()
        actor_opt.zero_grad()
        (-(gaussian(s).log_prob(a).sum(-1) * weights).mean()).backward()
        actor_opt.step()
        with torch.no_grad():
            for p, p_target in zip(critic.parameters(), critic_target.parameters()):
                p_target.copy_(tau * p + (1 - tau) * p_target)
        assert float(metrics["advantage"]) == pytest.approx(float(advantage.mean()), rel=1e-5, abs=1e-6)
        assert float(metrics["max_weight"]) == pytest.approx(float(weights.max()), rel=1e-5)
        pairs = ((trainer.actor, actor), (trainer.critic, critic), (trainer.critic_target, critic_target))
        for mine, reference in pairs:
            for p, p_reference in zip(mine.parameters(), reference.parameters()):
                assert torch.allclose(p, p_reference, rtol=1e-4, atol=1e-6), step


def test_weight_decay_reaches_the_policy_only():
    trainer = make_awac_trainer()
    assert trainer.actor_optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert trainer.critic_optimizer.param_groups[0]["weight_decay"] == 0
