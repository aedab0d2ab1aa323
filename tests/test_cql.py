"""CQL(H): the importance-sampled logsumexp, the sign of the conservative term, the tanh-Gaussian
log-density, the SAC losses and targets on tiny tensors, the mean-action target, the Lagrange multiplier's
direction, the Q-versus-return check, the behavior-cloning warm start as the authors' loop counts it, a short
training that must leave dataset actions above random ones, and the trainer contract (compiled = eager,
exported policy, checkpoint state)."""

import copy
import math

import numpy as np
import pytest
import torch

import cql

GAMMA = 0.99


def make_cql_trainer(**overrides):
    config = cql.TrainConfig(device="cpu", hidden_dim=8, n_hidden=1, num_sampled_actions=3, **overrides)
    return cql.Trainer(3, 2, 2.0, config, torch.device("cpu"))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 4 - 2,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def calibrated_batch(batch_size=16):
    """A batch with returns-to-go near the initial Q-values, so that the Cal-QL bound binds for some samples."""
    return {**random_batch(batch_size), "returns_to_go": 0.3 * torch.randn(batch_size)}


def test_importance_sampled_logsumexp_matches_hand_computation():
    q_random, q_policy, q_next = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]]), torch.tensor([[3.0, 0.0]])
    log_pi, log_pi_next = torch.tensor([[-0.2, 0.3]]), torch.tensor([[1.5, -0.7]])
    log_density = cql.uniform_log_density(action_dim=2, max_action=2.0)
    assert log_density == pytest.approx(2 * math.log(1 / 4))  # density (1 / (2 * 2))^2 on [-2, 2]^2
    terms = [1.0 - log_density, 2.0 - log_density, 0.5 + 0.2, -1.0 - 0.3, 3.0 - 1.5, 0.0 + 0.7]
    expected = math.log(sum(math.exp(t) for t in terms))
    got = cql.importance_sampled_logsumexp(q_random, q_policy, q_next, log_density, log_pi, log_pi_next)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_conservative_gap_pushes_sampled_actions_down_and_data_up():
    q_random = torch.tensor([[[1.0, 2.0, 0.0]]], requires_grad=True)  # [critics, B, n]
    q_policy = torch.tensor([[[0.5, 1.5, -1.0]]], requires_grad=True)
    q_next = torch.tensor([[[0.0, 0.3, 0.2]]], requires_grad=True)
    q_data = torch.tensor([[1.0]], requires_grad=True)
    zeros = torch.zeros(1, 3)
    logsumexp_q = cql.importance_sampled_logsumexp(q_random, q_policy, q_next, -math.log(2.0), zeros, zeros)
    gap = cql.conservative_gap(logsumexp_q, q_data)
    expected = math.log(sum(math.exp(q + math.log(2.0)) for q in (1.0, 2.0, 0.0))
                        + sum(math.exp(q) for q in (0.5, 1.5, -1.0, 0.0, 0.3, 0.2))) - 1.0
    assert gap.item() == pytest.approx(expected, rel=1e-6)
    gap.sum().backward()
    # Gradient descent on the gap: dataset Q goes up, every sampled action's Q goes down, the softmax weights
    # (which sum to one, so the two pulls balance) put most of the push on the highest Q.
    assert q_data.grad.item() == pytest.approx(-1.0)
    for q in (q_random, q_policy, q_next):
        assert (q.grad > 0).all()
    total = q_random.grad.sum() + q_policy.grad.sum() + q_next.grad.sum()
    assert total.item() == pytest.approx(1.0, rel=1e-6)
    assert q_random.grad[0, 0, 1] == max(g.max() for g in (q_random.grad, q_policy.grad, q_next.grad))


def test_conservative_steps_open_a_gap_between_dataset_and_random_actions():
    torch.manual_seed(0)
    critic = cql.EnsembleCritic(3, 1, 32)
    states, data_actions = torch.randn(64, 3), torch.full((64, 1), 0.5)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    random_actions = torch.empty(64, 5, 1).uniform_(-2.0, 2.0)

    def q_random():
        return critic(states.repeat_interleave(5, 0), random_actions.flatten(0, 1)).view(2, 64, 5)

    before_data, before_random = critic(states, data_actions).mean(), q_random().mean()
    for _ in range(20):
        zeros = torch.zeros(64, 0)
        logsumexp_q = cql.importance_sampled_logsumexp(q_random(), zeros.expand(2, 64, 0), zeros.expand(2, 64, 0),
                                                       cql.uniform_log_density(1, 2.0), zeros, zeros)
        loss = cql.conservative_gap(logsumexp_q, critic(states, data_actions)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # One network: pushing random actions down drags the dataset's along; what must grow is their difference.
    after_data, after_random = critic(states, data_actions).mean(), q_random().mean()
    assert after_random < before_random
    assert after_data - after_random > before_data - before_random + 0.1


def test_tanh_gaussian_log_prob_matches_numeric_change_of_variables():
    """p(a) = prod_j d/da_j Phi((atanh(a_j / m) - mu_j) / sigma_j), by central differences of the CDF."""
    mean, log_std, max_action = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([-0.5, 0.4],
                                                                                             dtype=torch.float64), 2.0
    pre_tanh = torch.tensor([[0.1, -2.5], [1.7, 0.4], [-0.9, -0.1]], dtype=torch.float64)
    actions = max_action * torch.tanh(pre_tanh)
    normal = torch.distributions.Normal(mean, log_std.exp())
    h = 1e-6

    def cdf(a):
        return normal.cdf(torch.atanh(a / max_action))

    numeric = ((cdf(actions + h) - cdf(actions - h)) / (2 * h)).log().sum(-1)
    got = cql.tanh_gaussian_log_prob(pre_tanh, mean, log_std, max_action)
    assert torch.allclose(got, numeric, rtol=1e-5, atol=1e-5)


def test_policy_sample_log_prob_and_deterministic_action():
    torch.manual_seed(0)
    actor = cql.TanhGaussianPolicy(3, 2, 16, 2, max_action=2.0)
    states = torch.randn(5, 3)
    actions, log_pi = actor.sample(states)
    assert actions.shape == (5, 2) and log_pi.shape == (5,)
    assert actions.abs().max() < 2.0
    mean, log_std = actor.mean_and_log_std(states)
    expected = cql.tanh_gaussian_log_prob(torch.atanh(actions.double() / 2.0), mean.double(), log_std.double(), 2.0)
    assert torch.allclose(log_pi.double(), expected, atol=1e-3)
    assert torch.allclose(actor.log_prob(states, actions), log_pi, atol=1e-3)
    assert torch.allclose(actor(states), 2.0 * torch.tanh(mean))
    # Dataset actions on the bounds (clipped actions) keep a finite log-density.
    assert torch.isfinite(actor.log_prob(states, torch.full((5, 2), 2.0))).all()


def test_critic_actor_and_temperature_losses_by_hand():
    q_data, target = torch.tensor([[1.0, 2.0], [0.0, 3.0]]), torch.tensor([0.5, 2.5])
    assert cql.critic_loss(q_data, target).item() == pytest.approx((0.25 + 0.25) / 2 + (0.25 + 0.25) / 2)
    q_pi, log_pi, alpha = torch.tensor([1.0, -2.0]), torch.tensor([0.5, -1.0]), torch.tensor(0.2)
    assert cql.actor_loss(q_pi, log_pi, alpha).item() == pytest.approx(((0.1 - 1.0) + (-0.2 + 2.0)) / 2)
    log_alpha = torch.tensor(0.3)
    expected = -0.3 * ((0.5 - 1.0) + (-1.0 - 1.0)) / 2
    assert cql.temperature_loss(log_alpha, log_pi, -1.0).item() == pytest.approx(expected)
    log_pi_data = torch.tensor([-3.0, 0.5])
    assert cql.behavior_cloning_loss(log_pi, log_pi_data, alpha).item() == pytest.approx(((0.1 + 3.0) + (-0.2 - 0.5)) / 2)


class FixedActor:
    def __init__(self, actions, log_pi):
        self.actions, self.log_pi = actions, log_pi

    def sample(self, states):
        return self.actions, self.log_pi


@pytest.mark.parametrize("backup_entropy", [False, True])
def test_bellman_target_by_hand(backup_entropy):
    batch = {"next_observations": torch.zeros(2, 3), "rewards": torch.tensor([1.0, -1.0]),
             "terminals": torch.tensor([0.0, 1.0])}
    critic_target = lambda s, a: torch.tensor([[2.0, 5.0], [3.0, 4.0]])  # noqa: E731 - min over critics: [2, 4]
    actor = FixedActor(torch.zeros(2, 1), torch.tensor([-0.5, 0.7]))
    target = cql.bellman_target(critic_target, actor, batch, torch.tensor(0.1), GAMMA, backup_entropy)
    next_v = 2.0 - (0.1 * -0.5 if backup_entropy else 0.0)
    assert target.tolist() == pytest.approx([1.0 + GAMMA * next_v, -1.0])


class MeanOnlyActor:
    """A policy whose mean action is 0.25 everywhere; drawing from it is an error."""

    def __call__(self, states):
        return torch.full((states.shape[0], 1), 0.25)

    def sample(self, states):
        raise AssertionError("the mean target draws no action")


def test_mean_action_bellman_target_by_hand():
    batch = {"next_observations": torch.zeros(2, 3), "rewards": torch.tensor([1.0, -1.0]),
             "terminals": torch.tensor([0.0, 1.0])}
    scored = []

    def critic_target(states, actions):
        scored.append(actions)
        return torch.tensor([[2.0, 5.0], [3.0, 4.0]])  # min over critics: [2, 4]

    target = cql.bellman_target(critic_target, MeanOnlyActor(), batch, torch.tensor(0.1), GAMMA, True, mean_action=True)
    assert torch.equal(scored[0], torch.full((2, 1), 0.25))
    assert target.tolist() == pytest.approx([1.0 + GAMMA * 2.0, -1.0])  # no entropy term


@pytest.mark.parametrize("target_action", ["sample", "mean"])
def test_trainer_target_uses_the_configured_next_action(target_action):
    """"mean" scores s' at the actor's deterministic action max_action tanh(mu(s')): the same target whatever the
    random numbers; "sample" draws a' ~ pi(.|s'), so two seeds give two targets."""
    batch = random_batch()
    targets = []
    for seed in (1, 2):
        torch.manual_seed(0)
        trainer = make_cql_trainer(target_action=target_action)
        with torch.no_grad():
            mean_target = cql.bellman_target(trainer.critic_target, trainer.actor, batch, torch.tensor(1.0), trainer.gamma,
                                             True, mean_action=True)
        torch.manual_seed(seed)
        targets.append(trainer.update(batch, 1)["q_target"].item())
    if target_action == "mean":
        assert targets[0] == targets[1] == pytest.approx(mean_target.mean().item())
    else:
        assert targets[0] != targets[1]


def test_unknown_target_action_is_one_sentence():
    with pytest.raises(SystemExit, match="target_action must be sample or mean, got 'median'"):
        cql.train(cql.TrainConfig(target_action="median"))


def test_sampled_actions_shapes_and_range():
    torch.manual_seed(0)
    actor = cql.TanhGaussianPolicy(3, 2, 16, 2, max_action=2.0)
    actions, log_pi, log_pi_next = cql.sampled_actions(actor, torch.randn(4, 3), torch.randn(4, 3), 5, 2)
    assert actions.shape == (4, 15, 2) and log_pi.shape == log_pi_next.shape == (4, 5)
    assert actions.abs().max() <= 2.0
    assert actions[:, :5].abs().max() > 1.0  # the uniform block spans [-2, 2], not [-1, 1]


@pytest.mark.parametrize("gap, direction", [(3.0, 1), (1.0, -1)])
def test_lagrange_multiplier_grows_when_gap_exceeds_tau(gap, direction):
    trainer = make_cql_trainer(cql_lagrange=True, cql_alpha=1.0, target_action_gap=2.0)
    penalty, extra = trainer.conservative_penalty(torch.tensor([gap, gap]))
    assert extra["alpha_prime"].item() == pytest.approx(1.0)  # exp(0): the value before this step
    assert penalty.item() == pytest.approx(2 * (gap - 2.0))
    assert direction * trainer.log_alpha_prime.item() > 0


def test_initial_q_and_return_by_hand():
    torch.manual_seed(0)
    trainer = make_cql_trainer()
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)
    initial_states = np.random.default_rng(7).normal(size=(2, 3)).astype(np.float32)
    episodes = {"returns": np.array([5.0, 7.0]), "discounted_returns": np.array([4.0, 6.0]),
                "initial_states": initial_states}
    result = cql.initial_q_and_return(trainer.critic, trainer.policy(), episodes, mean, std, reward_scale=2.0)
    states = torch.as_tensor((initial_states - mean) / std)
    with torch.no_grad():
        q = trainer.critic(states, trainer.actor(states)).min(0).values.mean().item() / 2.0
    assert result["q_initial"] == pytest.approx(q, rel=1e-5)
    assert set(result) == {"q_initial", "q_initial_minus_return"}  # the discounted return itself: eval/discounted_return
    assert result["q_initial_minus_return"] == pytest.approx(q - 5.0, rel=1e-5)


def train_briefly(cql_alpha, updates=200):
    """A small CQL (critic lr raised from 3e-4 so that 200 updates show the effect) on the tiny medium dataset."""
    torch.manual_seed(0)
    config = cql.TrainConfig(dataset_id="local/pendulum/medium-v0", cql_alpha=cql_alpha, hidden_dim=64, n_hidden=2,
                             batch_size=128, critic_lr=1e-3, bc_steps=0)
    data = cql.flatten_episodes(cql.load_dataset(config.dataset_id))
    buffer, _, _, _ = cql.transition_buffer(data, config.normalize_states, config.normalize_reward, torch.device("cpu"))
    trainer = cql.Trainer(3, 1, 2.0, config, torch.device("cpu"))
    for step in range(1, updates + 1):
        trainer.update(buffer.sample(config.batch_size), step)
    states, actions = buffer.data["observations"], buffer.data["actions"]
    with torch.no_grad():
        q_data = trainer.critic(states, actions).mean().item()
        q_random = trainer.critic(states, torch.empty_like(actions).uniform_(-2.0, 2.0)).mean().item()
    return q_data, q_random


def test_short_training_ranks_dataset_actions_above_random_ones(minari_root):
    q_data, q_random = train_briefly(cql_alpha=5.0)
    print(f"\ncql_alpha 5: mean Q(s, a_data) {q_data:.3f}, mean Q(s, a_uniform) {q_random:.3f}")
    assert q_data > q_random + 0.5
    q_data, q_random = train_briefly(cql_alpha=0.0)
    print(f"cql_alpha 0 (plain SAC): mean Q(s, a_data) {q_data:.3f}, mean Q(s, a_uniform) {q_random:.3f}, "
          f"dataset actions {'still' if q_data > q_random else 'no longer'} ranked higher")


def actor_after_updates(updates, critic_scale, bc_steps=3):
    """The actor after updates 1 .. `updates` from the same seed and batch, with the critic's output layer scaled."""
    torch.manual_seed(0)
    trainer = make_cql_trainer(bc_steps=bc_steps)
    with torch.no_grad():
        trainer.critic.net[-1].weight.mul_(critic_scale)
    batch = random_batch()
    torch.manual_seed(1)
    for step in range(1, updates + 1):
        trainer.update(batch, step)
    return [p.detach().clone() for p in trainer.actor.parameters()]


def test_warm_start_counts_updates_as_the_authors_loop():
    """The authors increment their counter before `if _current_epoch < policy_eval_start`: with bc_steps 3,
    updates 1 and 2 clone the data whatever the critic says, and update 3 follows the critic."""
    during = [actor_after_updates(2, critic_scale=s) for s in (1.0, 10.0)]
    assert all(torch.equal(a, b) for a, b in zip(*during))  # behavior cloning: the critic does not matter
    after = [actor_after_updates(3, critic_scale=s) for s in (1.0, 10.0)]
    assert not all(torch.equal(a, b) for a, b in zip(*after))


def test_warm_start_clones_the_dataset_actions():
    torch.manual_seed(0)
    trainer = make_cql_trainer(bc_steps=10**6, max_steps=10**7, actor_lr=1e-2)
    batch = random_batch()
    batch["actions"] = torch.full_like(batch["actions"], 0.5)
    for step in range(1, 151):
        trainer.update(batch, step)
    with torch.no_grad():
        actions = trainer.policy()(batch["observations"])
    assert (actions - 0.5).abs().max() < 0.1


@pytest.mark.parametrize("lagrange", [False, True])
def test_checkpoint_state_round_trips(lagrange, tmp_path):
    """Networks, then alpha (and alpha'), then their optimizers in the same order, through torch.save and
    torch.load(weights_only=True) as checkpoints are loaded; the next update is then the same on both."""
    from conftest import tensors_of

    torch.manual_seed(0)
    a, b = make_cql_trainer(cql_lagrange=lagrange, bc_steps=2), make_cql_trainer(cql_lagrange=lagrange, bc_steps=2)
    a.update(random_batch(), 1)
    names = ["actor", "critic", "critic_target", "log_alpha", "log_alpha_prime", "actor_optimizer",
             "critic_optimizer", "alpha_optimizer", "alpha_prime_optimizer"]
    assert list(a.state_dict()) == [n for n in names if lagrange or "prime" not in n]
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    batch = random_batch()
    torch.manual_seed(3)
    metrics_a = a.update(batch, 2)
    torch.manual_seed(3)
    metrics_b = b.update(batch, 2)
    assert all(torch.equal(metrics_a[k], metrics_b[k]) for k in metrics_a)
    b_state = dict(tensors_of(b.state_dict()))
    for path, tensor in tensors_of(a.state_dict()):
        assert torch.equal(tensor, b_state[path]), path


def test_calibrated_is_max_of_q_and_the_states_return_to_go():
    q = torch.tensor([[[-2.0, 1.0], [0.5, -0.5]], [[3.0, -4.0], [-1.0, 2.0]]], requires_grad=True)  # [critics, B, N]
    returns_to_go = torch.tensor([0.0, 1.0])  # one per state, for every critic and sample
    bounded = cql.calibrated(q, returns_to_go)
    assert bounded.tolist() == [[[0.0, 1.0], [1.0, 1.0]], [[3.0, 0.0], [1.0, 2.0]]]
    bounded.sum().backward()
    assert q.grad.tolist() == [[[0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]  # no push below G


class ScriptedActor:
    max_action = 2.0

    def sample(self, states):
        return torch.zeros(states.shape[0], 1), torch.tensor([-0.1, 0.3]).repeat(states.shape[0] // 2)


def test_cal_ql_bounds_the_policys_actions_not_the_uniform_ones():
    """One state, n = 2: Q of [unif, unif, pi(s), pi(s), pi(s'), pi(s')] at s, G(s) = 0.  Cal-QL (the authors'
    conservative_sac.py) replaces Q by max(Q, G) for the four policy actions before the importance weights."""
    q = torch.tensor([[0.5, -1.0, -2.0, 1.0, -3.0, 0.2]])  # [1 critic, B * 3n]
    states = torch.zeros(1, 3)
    log_density = -math.log(4.0)  # Unif([-2, 2])
    log_pi = [-0.1, 0.3, -0.1, 0.3]

    def expected(policy_q):
        terms = [0.5 - log_density, -1.0 - log_density] + [v - lp for v, lp in zip(policy_q, log_pi)]
        return math.log(sum(math.exp(term) for term in terms))

    for returns_to_go, policy_q in ((None, [-2.0, 1.0, -3.0, 0.2]), (torch.zeros(1), [0.0, 1.0, 0.0, 0.2])):
        got, q_random = cql.logsumexp_q(lambda s, a: q, ScriptedActor(), states, states, 2, 1, returns_to_go)
        assert got.item() == pytest.approx(expected(policy_q), rel=1e-6)
        assert q_random.tolist() == [[[0.5, -1.0]]]


@pytest.mark.parametrize("lagrange", [False, True])
def test_calibration_off_is_cql_exactly(lagrange):
    """--calibrated false ignores a batch's returns-to-go, and a bound that never binds (G = -inf) changes nothing:
    the same metrics and weights, bit for bit, as plain CQL (whose code path is the one before Cal-QL was added).
    A bound that binds changes the gap."""
    batch = random_batch()
    cases = [({}, batch), ({}, {**batch, "returns_to_go": torch.full((16,), 1e3)}),
             ({"calibrated": True}, {**batch, "returns_to_go": torch.full((16,), -math.inf)}),
             ({"calibrated": True}, {**batch, "returns_to_go": torch.full((16,), 1e3)})]
    results = []
    for overrides, b in cases:
        torch.manual_seed(0)
        trainer = make_cql_trainer(cql_lagrange=lagrange, bc_steps=2, **overrides)
        torch.manual_seed(1)
        results.append(([trainer.update(b, step) for step in (1, 2, 3)], list(trainer.critic.parameters())))
    plain_metrics, plain_weights = results[0]
    for metrics, weights in results[1:3]:
        assert all(torch.equal(m[k], p[k]) for m, p in zip(metrics, plain_metrics) for k in p)
        assert all(torch.equal(w, p) for w, p in zip(weights, plain_weights))
    assert results[3][0][0]["cql_gap"] > plain_metrics[0]["cql_gap"] + 100  # the bound at 1e3 lifts logsumexp


def test_zero_cql_alpha_without_lagrange_is_sac(monkeypatch):
    """alpha_cql = 0 without Lagrange skips the regularizer (the from-scratch SAC learner of the fine-tuning
    comparison): the critic takes the plain SAC step, and the penalty's sampling never runs."""
    torch.manual_seed(0)
    sac, batch = make_cql_trainer(cql_alpha=0.0, bc_steps=0), random_batch()
    reference = copy.deepcopy(sac)
    monkeypatch.setattr(cql, "logsumexp_q", lambda *args: pytest.fail("the regularizer ran"))
    torch.manual_seed(1)
    metrics = sac.update(batch, 1)
    assert "cql_gap" not in metrics and "q_random" not in metrics
    torch.manual_seed(1)  # the same a' ~ pi(.|s') in the target
    with torch.no_grad():
        y = cql.bellman_target(reference.critic_target, reference.actor, batch, reference.log_alpha.exp(), GAMMA,
                              reference.backup_entropy)
    q_loss = cql.critic_loss(reference.critic(batch["observations"], batch["actions"]), y)
    reference.critic_optimizer.zero_grad()
    q_loss.backward()
    reference.critic_optimizer.step()
    for mine, theirs in zip(sac.critic.parameters(), reference.critic.parameters()):
        torch.testing.assert_close(mine, theirs)
