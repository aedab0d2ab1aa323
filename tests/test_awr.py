"""AWR's math against hand computations: TD(lambda) and Monte Carlo returns with truncated and terminal
endings, the advantage weights and their clip, the policy's log-likelihood and its initialization, the
authors' iteration (value steps, refresh with the refit V, policy steps) with SGD and momentum, V of next states
by shifting, and the trainer contract (compiled update, exported policy, checkpoint state)."""

import copy
import math

import pytest
import torch

import awr

GAMMA, LAM = 0.5, 0.5
# Two 3-step episodes with the same rewards r = (1, 2, 3) and next-state values V(s_1..s_3) = (10, 20, 30):
# the first is truncated (bootstraps from V(s_3) = 30), the second ends in a terminal state (no bootstrap).
REWARDS = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
NEXT_VALUES = torch.tensor([10.0, 20.0, 30.0, 10.0, 20.0, 30.0])
TERMINALS = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
ENDS = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])


def test_td_lambda_returns_truncated_and_terminal():
    # truncated: R_2 = 3 + .5 * 30 = 18;  R_1 = 2 + .5 (.5 * 20 + .5 * 18) = 11.5;  R_0 = 1 + .5 (.5 * 10 + .5 * 11.5)
    # terminal:  R_2 = 3;                 R_1 = 2 + .5 (.5 * 20 + .5 * 3) = 7.75;   R_0 = 1 + .5 (.5 * 10 + .5 * 7.75)
    expected = torch.tensor([6.375, 11.5, 18.0, 5.4375, 7.75, 3.0])
    returns = awr.lambda_returns(REWARDS, NEXT_VALUES, TERMINALS, ENDS, GAMMA, LAM)
    torch.testing.assert_close(returns, expected)


def test_monte_carlo_returns_are_lambda_one():
    # truncated: 18, 2 + .5 * 18 = 11, 1 + .5 * 11 = 6.5;  terminal: 3, 2 + .5 * 3 = 3.5, 1 + .5 * 3.5 = 2.75
    expected = torch.tensor([6.5, 11.0, 18.0, 2.75, 3.5, 3.0])
    returns = awr.lambda_returns(REWARDS, NEXT_VALUES, TERMINALS, ENDS, GAMMA, 1.0)
    torch.testing.assert_close(returns, expected)


def test_lambda_zero_is_one_step_td():
    expected = REWARDS + GAMMA * (1 - TERMINALS) * NEXT_VALUES
    torch.testing.assert_close(awr.lambda_returns(REWARDS, NEXT_VALUES, TERMINALS, ENDS, GAMMA, 0.0), expected)


def reference_returns(rewards, next_values, terminals, ends, gamma, lam):
    """The recursion one episode and one step at a time, in plain Python."""
    out, following = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        if ends[t]:
            following = next_values[t]
        following = rewards[t] + gamma * (1 - terminals[t]) * ((1 - lam) * next_values[t] + lam * following)
        out[t] = following
    return torch.tensor(out)


def test_episodes_of_different_lengths_match_a_step_by_step_loop():
    generator = torch.Generator().manual_seed(0)
    lengths, terminal = [2, 5, 1, 3], [True, False, False, True]
    ends = torch.cat([torch.eye(n)[-1] for n in lengths])
    terminals = torch.cat([torch.eye(n)[-1] * float(d) for n, d in zip(lengths, terminal)])
    rewards, next_values = torch.randn(2, len(ends), generator=generator)
    returns = awr.lambda_returns(rewards, next_values, terminals, ends, 0.9, 0.8)
    expected = reference_returns(rewards.tolist(), next_values.tolist(), terminals.tolist(), ends.tolist(), 0.9, 0.8)
    torch.testing.assert_close(returns, expected)


def test_weights_exp_advantage_over_beta_clipped():
    advantage = torch.tensor([0.0, 1.0, 2.0, 10.0])
    weights = awr.temperature_weights(advantage, beta=2.0, max_weight=2.5, normalize=False)
    torch.testing.assert_close(weights, torch.tensor([1.0, math.exp(0.5), 2.5, 2.5]))


def test_weights_normalized_advantage():
    advantage = torch.tensor([1.0, 2.0, 3.0])  # mean 2, population std sqrt(2/3)
    z = 1.0 / (math.sqrt(2.0 / 3.0) + 1e-5)
    weights = awr.temperature_weights(advantage, beta=1.0, max_weight=20.0, normalize=True)
    torch.testing.assert_close(weights, torch.tensor([math.exp(-z), 1.0, math.exp(z)]))


def test_weight_clip_at_omega_max():
    weights = awr.temperature_weights(torch.tensor([-50.0, 0.0, 50.0]), beta=1.0, max_weight=20.0, normalize=False)
    assert weights.max().item() == 20.0 and weights[1].item() == 1.0
    assert awr.TrainConfig.max_weight == 20.0 and awr.TrainConfig.beta == 1.0


def test_actor_loss_is_weighted_gaussian_log_likelihood():
    policy = awr.GaussianPolicy(3, 1, 8, max_action=2.0, action_std=0.4)
    for p in policy.parameters():
        torch.nn.init.zeros_(p)  # mean 0, std 0.4 * 2 = 0.8
    batch = {"observations": torch.zeros(2, 3), "actions": torch.tensor([[0.8], [0.0]])}
    log_p = [-0.5 * x ** 2 - math.log(0.8) - 0.5 * math.log(2 * math.pi) for x in (1.0, 0.0)]
    weights = torch.tensor([2.0, 1.0])
    expected = -(2.0 * log_p[0] + 1.0 * log_p[1]) / 2
    assert awr.actor_loss(policy, batch, weights).item() == pytest.approx(expected, rel=1e-6)


def test_policy_output_layer_starts_near_zero():
    torch.manual_seed(0)
    policy = awr.GaussianPolicy(3, 2, 16, max_action=1.0, action_std=0.4)
    out = policy.net[-1]
    assert out.weight.abs().max().item() <= 0.01 and out.bias.abs().max().item() == 0.0
    assert policy(torch.randn(64, 3)).abs().max().item() < 0.1  # the initial mean action is about 0


def synthetic_trajectories(rewards=REWARDS, terminals=TERMINALS, ends=ENDS, state_dim=3, seed=0):
    """Episodes one after the other, with s_{t+1} of a step equal to s_t of the next one within an episode."""
    generator = torch.Generator().manual_seed(seed)
    n = len(ends)
    states = torch.randn(n + int(ends.sum()), state_dim, generator=generator)
    rows = torch.arange(n) + torch.cumsum(ends, 0).long() - ends.long()  # step t of episode k is row t + k
    return {"observations": states[rows], "next_observations": states[rows + 1],
            "actions": torch.rand(n, 1, generator=generator) * 2 - 1, "rewards": rewards, "terminals": terminals,
            "episode_ends": ends}


def make_awr_trainer(trajectories=None, **overrides):
    trajectories = trajectories or synthetic_trajectories()
    config = awr.TrainConfig(device="cpu", hidden_dim=16, batch_size=4, gamma=GAMMA, td_lambda=LAM, **overrides)
    return awr.Trainer(3, 1, 1.0, config, torch.device("cpu"), trajectories)


def expected_targets(value, data, normalize=False):
    """R^lambda and w computed the long way: V_psi of every next state, not of the shifted states."""
    with torch.no_grad():
        values, next_values = value(data["observations"]), value(data["next_observations"])
    returns = awr.lambda_returns(data["rewards"], next_values, data["terminals"], data["episode_ends"], GAMMA, LAM)
    return returns, awr.temperature_weights(returns - values, 1.0, 20.0, normalize=normalize)


def test_next_state_values_come_from_the_shifted_states():
    trainer = make_awr_trainer(normalize_advantages=False)
    trainer.refresh_targets()
    returns, weights = expected_targets(trainer.value, trainer.trajectories)
    torch.testing.assert_close(trainer.returns, returns)
    torch.testing.assert_close(trainer.weights, weights)


def batch_of(trainer, batch_size=4):
    index = torch.randint(0, len(trainer.returns), (batch_size,))
    return {"index": index, **{k: v[index] for k, v in trainer.trajectories.items() if k != "episode_ends"}}


def test_steps_follow_the_authors_iteration():
    # value_steps = 2, policy_steps = 3: steps 1-2 fit V_psi, 3-5 fit pi_phi, 6 starts the next iteration.
    # periodic() refreshes the targets before steps 1, 3 and 6 only, each time with the V_psi of that moment;
    # each update steps its phase's network alone, on the targets of its batch's rows.
    trainer = make_awr_trainer(normalize_advantages=False, value_steps=2, policy_steps=3)
    phases = []
    for step in range(1, 8):
        with torch.no_grad():
            trainer.value.net[-1].bias += 1.0  # V changes before every step; the targets follow at refreshes only
        before = trainer.returns.clone()
        trainer.periodic(step)
        refreshed = not torch.equal(before, trainer.returns)
        if refreshed:
            returns, weights = expected_targets(trainer.value, trainer.trajectories)
            torch.testing.assert_close(trainer.returns, returns)
            torch.testing.assert_close(trainer.weights, weights)
        params = {name: [p.clone() for p in getattr(trainer, name).parameters()] for name in ("value", "actor")}
        batch = batch_of(trainer)
        metrics = trainer.update(batch, step)
        moved = [name for name in params
                 if any(not torch.equal(p, q) for p, q in zip(params[name], getattr(trainer, name).parameters()))]
        looked_up = trainer.returns if moved == ["value"] else trainer.weights
        key = "return" if moved == ["value"] else "weight"
        torch.testing.assert_close(metrics[key], looked_up[batch["index"]].mean())
        phases.append((step, moved, refreshed))
    assert phases == [(1, ["value"], True), (2, ["value"], False), (3, ["actor"], True), (4, ["actor"], False),
                      (5, ["actor"], False), (6, ["value"], True), (7, ["value"], False)]


def test_updates_are_the_authors_loop_with_sgd_momentum():
    # Two iterations of learning/awr_agent.py's _update written out with torch.optim.SGD(momentum): targets with
    # V_psi, value_steps steps of V_psi, targets with the refit V_psi, policy_steps steps of pi_phi.
    torch.manual_seed(0)
    trainer = make_awr_trainer(longer_trajectories(), value_steps=2, policy_steps=3, actor_lr=1e-2)
    value, actor = copy.deepcopy(trainer.value), copy.deepcopy(trainer.actor)
    value_optimizer = torch.optim.SGD(value.parameters(), lr=1e-2, momentum=0.9)
    actor_optimizer = torch.optim.SGD(actor.parameters(), lr=1e-2, momentum=0.9)
    initial = [p.clone() for p in (*value.parameters(), *actor.parameters())]
    batches = [batch_of(trainer) for _ in range(10)]
    for step, batch in enumerate(batches, start=1):
        trainer.periodic(step)
        trainer.update(batch, step)
    batches = iter(batches)
    for _ in range(2):
        returns, _ = expected_targets(value, trainer.trajectories, normalize=True)
        for _ in range(2):
            batch = next(batches)
            value_optimizer.zero_grad()
            awr.value_loss(value, batch["observations"], returns[batch["index"]], GAMMA).backward()
            value_optimizer.step()
        _, weights = expected_targets(value, trainer.trajectories, normalize=True)
        for _ in range(3):
            batch = next(batches)
            actor_optimizer.zero_grad()
            awr.actor_loss(actor, batch, weights[batch["index"]]).backward()
            actor_optimizer.step()
    assert all(not torch.equal(p, q) for p, q in zip(initial, (*value.parameters(), *actor.parameters())))
    for ours, reference in ((trainer.value, value), (trainer.actor, actor)):
        for p, q in zip(ours.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q)


def longer_trajectories():
    lengths, terminal = [5, 7, 4, 8], [False, True, False, True]
    ends = torch.cat([torch.eye(n)[-1] for n in lengths])
    terminals = torch.cat([torch.eye(n)[-1] * float(d) for n, d in zip(lengths, terminal)])
    return synthetic_trajectories(torch.randn(len(ends), generator=torch.Generator().manual_seed(1)), terminals, ends)


def test_checkpoint_state_round_trips(tmp_path):
    from conftest import tensors_of

    a, b = make_awr_trainer(value_steps=1, policy_steps=1), make_awr_trainer(value_steps=1, policy_steps=1)
    for step in (1, 2):  # both optimizers hold a momentum buffer
        a.periodic(step)
        a.update(batch_of(a), step)
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # as the appendix loads checkpoints
    b_state = dict(tensors_of(b.state_dict()))
    for path, tensor in tensors_of(a.state_dict()):
        assert torch.equal(tensor, b_state[path]), path
    assert torch.equal(a.returns, b.returns) and torch.equal(a.weights, b.weights)
