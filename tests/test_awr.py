"""AWR's math against hand computations: TD(lambda) and Monte Carlo returns with truncated and terminal
endings, the advantage weights and their clip, the policy's log-likelihood, the refresh of the targets."""

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
    weights = awr.awr_weights(advantage, beta=2.0, max_weight=2.5, normalize=False)
    torch.testing.assert_close(weights, torch.tensor([1.0, math.exp(0.5), 2.5, 2.5]))


def test_weights_normalized_advantage():
    advantage = torch.tensor([1.0, 2.0, 3.0])  # mean 2, population std sqrt(2/3)
    z = 1.0 / (math.sqrt(2.0 / 3.0) + 1e-5)
    weights = awr.awr_weights(advantage, beta=1.0, max_weight=20.0, normalize=True)
    torch.testing.assert_close(weights, torch.tensor([math.exp(-z), 1.0, math.exp(z)]))


def test_weight_clip_at_omega_max():
    weights = awr.awr_weights(torch.tensor([-50.0, 0.0, 50.0]), beta=1.0, max_weight=20.0, normalize=False)
    assert weights.max().item() == 20.0 and weights[1].item() == 1.0
    assert awr.TrainConfig.max_weight == 20.0 and awr.TrainConfig.beta == 1.0


def test_policy_loss_is_weighted_gaussian_log_likelihood():
    policy = awr.GaussianPolicy(3, 1, 8, max_action=2.0, action_std=0.4)
    for p in policy.parameters():
        torch.nn.init.zeros_(p)  # mean 0, std 0.4 * 2 = 0.8
    batch = {"observations": torch.zeros(2, 3), "actions": torch.tensor([[0.8], [0.0]])}
    log_p = [-0.5 * x ** 2 - math.log(0.8) - 0.5 * math.log(2 * math.pi) for x in (1.0, 0.0)]
    weights = torch.tensor([2.0, 1.0])
    expected = -(2.0 * log_p[0] + 1.0 * log_p[1]) / 2
    assert awr.policy_loss(policy, batch, weights).item() == pytest.approx(expected, rel=1e-6)


def test_targets_refresh_every_returns_every_batches():
    config = awr.TrainConfig(returns_every=2, gamma=GAMMA, td_lambda=LAM, normalize_advantages=False)
    data = {"observations": torch.randn(6, 3).numpy(), "actions": torch.zeros(6, 1).numpy(),
            "rewards": REWARDS.numpy(), "next_observations": torch.randn(6, 3).numpy(), "terminals": TERMINALS.numpy()}
    buffer = awr.DeviceBuffer(data, torch.device("cpu"))
    trainer = awr.AWRTrainer(3, 1, 1.0, config, torch.device("cpu"), buffer, ENDS)

    def expected():
        with torch.no_grad():
            values = trainer.value(buffer.data["observations"])
            next_values = trainer.value(buffer.data["next_observations"])
        returns = awr.lambda_returns(REWARDS, next_values, TERMINALS, ENDS, GAMMA, LAM)
        return returns, awr.awr_weights(returns - values, 1.0, 20.0, normalize=False)

    batch = trainer.sample(4)
    first = expected()
    torch.testing.assert_close(trainer.returns, first[0])
    torch.testing.assert_close(trainer.weights, first[1])
    assert set(batch) >= {"returns", "weights"}

    with torch.no_grad():
        trainer.value.net[-1].bias += 1.0  # V changes; the targets follow only at the next refresh
    trainer.sample(4)
    torch.testing.assert_close(trainer.returns, first[0])
    trainer.sample(4)
    second = expected()
    torch.testing.assert_close(trainer.returns, second[0])
    torch.testing.assert_close(trainer.weights, second[1])
    assert not torch.allclose(second[0], first[0])
