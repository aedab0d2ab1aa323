"""FQE's targets and loss against hand computations, its estimate against the closed-form value of a
small MDP, TF-Addons' weight decay, the trainer's contract (compiled update, checkpoint state), and through
the CLI: estimate.json only once max_steps is reached, and bad input (a policy of the wrong size, a file that
is not a policy)."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import fqe
from conftest import run_script


def constant_critic(values, gamma):
    """An EnsembleCritic whose member i outputs Q_i = values[i] everywhere (f_i = (1 - gamma) values[i])."""
    critic = fqe.EnsembleCritic(1, 1, 4)
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()
        critic.net[-1].bias.copy_(torch.tensor(values).view(-1, 1, 1) * (1 - gamma))
    return critic


def test_targets_and_loss_by_hand():
    gamma = 0.9
    batch = {"observations": torch.zeros(3, 1), "actions": torch.zeros(3, 1), "rewards": torch.tensor([1.0, 1.0, 3.0]),
             "next_observations": torch.zeros(3, 1), "next_actions": torch.zeros(3, 1),
             "terminals": torch.tensor([0.0, 1.0, 0.0])}
    # Target members: Q_bar = 5 and -2.  y_0 = [1 + 0.9 * 5, 1, 3 + 0.9 * 5] = [5.5, 1, 7.5], clipped at 7;
    # y_1 = [1 - 1.8, 1, 3 - 1.8] = [-0.8, 1, 1.2]; the terminal transition does not bootstrap.
    targets = fqe.bellman_target(constant_critic([5.0, -2.0], gamma), batch, gamma, q_min=-10.0, q_max=7.0)
    assert targets.tolist() == [pytest.approx([5.5, 1.0, 7.0]), pytest.approx([-0.8, 1.0, 1.2])]
    # Online members Q = 1: per member the mean squared error, summed over the members.
    expected = ((1 - 5.5) ** 2 + 0 + (1 - 7) ** 2) / 3 + ((1 + 0.8) ** 2 + 0 + (1 - 1.2) ** 2) / 3
    assert fqe.critic_loss(constant_critic([1.0, 1.0], gamma), batch, targets, gamma).item() == pytest.approx(expected)


def test_estimate_is_the_mean_of_the_members_at_the_initial_states():
    critic = constant_critic([3.0, -1.0], 0.99)
    assert fqe.value_estimate(critic, torch.zeros(4, 1), torch.zeros(4, 1), 0.99).item() == pytest.approx(1.0)


def test_value_bounds_contain_zero():
    # A terminal ends the discounted sum early: with r > 0 the value of a short episode is below r_min / (1 - gamma).
    assert fqe.value_bounds(torch.tensor([0.5, 2.0]), 0.9) == pytest.approx((0.0, 20.0))
    assert fqe.value_bounds(torch.tensor([-1.0, -0.5]), 0.9) == pytest.approx((-10.0, 0.0))


# A chain of 5 states, one-hot; state 4 is terminal.  Action +1 or -1 moves that way with probability 3/4 and
# the other way with 1/4 (clipped to the chain); reaching state 4 pays 1, every other step -0.1.  pi goes
# right except in state 2; episodes start in state 0 or 1.
N_STATES, GAMMA, TERMINAL = 5, 0.9, 4
PI = np.array([1.0, 1.0, -1.0, 1.0, 1.0])
MOVES = ((0.75, 1), (0.25, -1))  # (probability, direction relative to the action)


def step(s, a, direction):
    s_next = int(np.clip(s + a * direction, 0, N_STATES - 1))
    return s_next, (1.0 if s_next == TERMINAL else -0.1)


def closed_form_q():
    """Q^pi(s, a) = r(s, a) + gamma sum_{s' not terminal} P(s'|s, a) V^pi(s'), V^pi = (I - gamma P_pi)^{-1} r_pi."""
    live = range(TERMINAL)
    p, r = np.zeros((TERMINAL, 2, TERMINAL)), np.zeros((TERMINAL, 2))
    for s in live:
        for j, a in enumerate((-1, 1)):
            for prob, direction in MOVES:
                s_next, reward = step(s, a, direction)
                r[s, j] += prob * reward
                if s_next != TERMINAL:
                    p[s, j, s_next] += prob
    pi_index = [int(PI[s] > 0) for s in live]
    p_pi, r_pi = p[list(live), pi_index], r[list(live), pi_index]
    v = np.linalg.solve(np.eye(TERMINAL) - GAMMA * p_pi, r_pi)
    return r + GAMMA * p @ v, v


def chain_dataset():
    """Every (s, a) with its successors in the proportions of P (3 copies and 1): the empirical MDP is the MDP."""
    rows = []
    for s in range(TERMINAL):
        for a in (-1, 1):
            for prob, direction in MOVES:
                s_next, reward = step(s, a, direction)
                rows += [(s, a, reward, s_next)] * int(prob * 4)
    s, a, r, s_next = map(np.array, zip(*rows))
    one_hot = np.eye(N_STATES, dtype=np.float32)
    return {"observations": one_hot[s], "actions": a[:, None].astype(np.float32), "rewards": r.astype(np.float32),
            "next_observations": one_hot[s_next], "terminals": (s_next == TERMINAL).astype(np.float32),
            "next_actions": PI[s_next][:, None].astype(np.float32)}


def test_fqe_recovers_the_closed_form_value_of_a_chain():
    """Every update regresses on the whole dataset, whose successors are in P's proportions: the regression
    targets are the exact expectations, so the fit converges to Q^pi instead of jittering around it."""
    torch.manual_seed(0)
    batch = fqe.DeviceBuffer(chain_dataset(), torch.device("cpu")).data
    config = fqe.TrainConfig(device="cpu", gamma=GAMMA, tau=0.05, hidden_dim=64, critic_lr=1e-3)
    trainer = fqe.Trainer(N_STATES, 1, 1.0, config, torch.device("cpu"), fqe.value_bounds(batch["rewards"], GAMMA))
    for step in range(1, 2001):
        trainer.update(batch, step)

    q_true, v_true = closed_form_q()
    states = torch.eye(N_STATES)[:TERMINAL]
    with torch.no_grad():
        q_fit = np.stack([fqe.q_values(trainer.critic_target, states, torch.full((TERMINAL, 1), a), GAMMA).mean(0)
                          for a in (-1.0, 1.0)], 1)
    j_hat = trainer.estimate(torch.eye(N_STATES)[:2], torch.as_tensor(PI[:2, None], dtype=torch.float32)).item()
    # J(pi) = (V(0) + V(1)) / 2 = -0.307; Q^pi spans -0.40 to 0.70.
    assert abs(j_hat - v_true[:2].mean()) < 0.005, (j_hat, v_true[:2].mean())
    assert np.abs(q_fit - q_true).max() < 0.01, (q_fit, q_true)


def make_fqe_trainer():
    config = fqe.TrainConfig(device="cpu", hidden_dim=32, batch_size=16, max_steps=100)
    return fqe.Trainer(3, 2, 1.0, config, torch.device("cpu"), (-50.0, 50.0))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "next_actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def test_weight_decay_multiplies_theta_by_one_minus_weight_decay_per_update():
    # TF-Addons' AdamW, as Fu et al. 2021's code: theta <- (1 - weight_decay) theta, whatever the learning rate.
    trainer = make_fqe_trainer()
    before = [p.detach().clone() for p in trainer.critic.parameters()]
    for p in trainer.critic.parameters():
        p.grad = torch.zeros_like(p)  # Adam's own step is then zero: only the decay moves theta
    trainer.critic_optimizer.step()
    for p, p0 in zip(trainer.critic.parameters(), before):
        torch.testing.assert_close(p.detach(), p0 * (1 - 1e-5))


def run_fqe(policy_path, minari_root, tmp_path, *args):
    """fqe.py's command line, in this process (conftest.run_script)."""
    return run_script("fqe", "--dataset_id", "local/pendulum/medium-replay-v0", "--policy_path", str(policy_path),
                      "--logging", "disabled", "--device", "cpu", "--eval_episodes", "1", "--max_steps", "10",
                      "--checkpoints_path", str(tmp_path / "run"), *args, cwd=tmp_path,
                      env={"MINARI_DATASETS_PATH": str(minari_root)})


def assert_one_sentence(result, expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def write_weights(path, in_features, out_features, max_action=2.0):
    """A policy_weights.pt of a linear policy, as the scripts' export_policy writes one beside policy.pt2."""
    layer = nn.Linear(in_features, out_features)
    policy = nn.Module()
    policy.net, policy.max_action = nn.Sequential(layer), max_action
    policy.forward = lambda s: max_action * torch.tanh(layer(s))
    weights = fqe.policy_weights(policy, np.zeros(in_features, np.float32), np.ones(in_features, np.float32))
    torch.save(weights, path)


def test_estimate_is_written_once_max_steps_is_reached(minari_root, tmp_path):
    write_weights(tmp_path / "policy_weights.pt", 3, 1)
    stopped = run_fqe(tmp_path / "policy_weights.pt", minari_root, tmp_path, "--stop_after", "6", "--eval_every", "5")
    assert stopped.returncode == 0, stopped.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "estimate.json").exists()
    finished = run_fqe(tmp_path / "policy_weights.pt", minari_root, tmp_path, "--eval_every", "5")
    assert finished.returncode == 0, finished.stderr
    estimate = json.loads((tmp_path / "run" / "estimate.json").read_text())
    last = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 10 and estimate["estimate"] == last["eval/estimate"]


@pytest.mark.parametrize("sizes, expected", [((4, 1), "observations of size 4, but dataset"),
                                             ((3, 2), "actions of size 2, but dataset")])
def test_policy_of_the_wrong_size_is_one_sentence(sizes, expected, minari_root, tmp_path):
    # Pendulum: observations of size 3, actions of size 1.
    write_weights(tmp_path / "policy_weights.pt", *sizes)
    assert_one_sentence(run_fqe(tmp_path / "policy_weights.pt", minari_root, tmp_path), expected)
    assert not (tmp_path / "run").exists()


class Planted:
    """An object whose unpickling creates a marker file: what a crafted file can do to a loader that unpickles."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# Bad policy files (issue 45, item 1): made here, never committed.  name -> (write(path, marker), expected line).
BAD_POLICIES = {
    "not a torch file": (lambda path, marker: path.write_bytes(b"not a policy"), "is not a policy"),
    "a checkpoint": (lambda path, marker: torch.save({"trainer": {}}, path), "is not a policy"),
    "planted pickle": (lambda path, marker: torch.save({"format": Planted(marker)}, path), "is not a policy"),
}


@pytest.mark.parametrize("case", BAD_POLICIES)
def test_a_file_that_is_not_a_policy_is_one_sentence(case, minari_root, tmp_path):
    write, expected = BAD_POLICIES[case]
    path, marker = tmp_path / "policy_weights.pt", tmp_path / "marker"
    write(path, marker)
    assert_one_sentence(run_fqe(path, minari_root, tmp_path), expected)
    assert not (tmp_path / "run").exists() and not marker.exists()


def test_a_crafted_pt2_is_never_loaded(minari_root, tmp_path, monkeypatch):
    """fqe.py never calls torch.export.load (a .pt2 can run code): given a policy.pt2, it reads the weights-only
    file beside it, and without one it refuses in one line; a .pt2 of a pickled object creates no file."""
    marker = tmp_path / "marker"
    torch.save({"program": Planted(marker)}, tmp_path / "policy.pt2")
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: marker.write_text("loaded"))
    with pytest.raises(SystemExit, match="does not exist; pass the policy_weights.pt"):
        fqe.load_policy(str(tmp_path / "policy.pt2"), "d", 3, 1)
    assert not marker.exists()
    assert_one_sentence(run_fqe(tmp_path / "policy.pt2", minari_root, tmp_path), "fqe.py never loads a .pt2")
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("algo", ["bcq", "dt"])
def test_bcq_and_dt_policies_are_refused_in_one_line(algo, minari_root, tmp_path):
    (tmp_path / "policy.pt2").write_bytes(b"")
    (tmp_path / "run.json").write_text(json.dumps({"algo": algo}))
    assert_one_sentence(run_fqe(tmp_path / "policy.pt2", minari_root, tmp_path), f"{algo}'s policy")
