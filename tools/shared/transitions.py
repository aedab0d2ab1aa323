"""Canonical source of the `transitions` block: the dataset as (s, a, r, s', done) on the device (DeviceBuffer),
with the state statistics, the reward scaling and the returns-to-go, and the evaluation and the export (policy.pt2)
of a policy that acts from one state, for every script that learns from single transitions (tools/sync_shared.py
lists them; dt, which learns from trajectories, has its own).  It uses fail, state_statistics,
normalized_score, EVAL_DISCOUNT and export_program from the appendix.
Edit here, then run `python -m tools.sync_shared`."""

import copy
import os
from pathlib import Path
from typing import Callable, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

# --- transitions: begin
class DeviceBuffer:
    """Arrays of equal length as tensors on the training device; batch indices are drawn there too."""

    def __init__(self, data: dict[str, np.ndarray], device: torch.device):
        self.data = {k: torch.as_tensor(np.asarray(v, np.float32), device=device) for k, v in data.items()}
        self.size = len(next(iter(self.data.values())))
        self.device = device

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


def reward_scale(data: dict[str, np.ndarray], enabled: bool) -> float:
    """1000 / (max return - min return) over trajectories (Kostrikov et al. 2022, appendix B); refused when all
    returns are equal (a one-episode dataset)."""
    if not enabled:
        return 1.0
    returns = data["episode_returns"][data["episode_ends"] > 0]
    if not returns.max() - returns.min() > 1e-3:  # one episode, or all of one return: the scale would be absurd
        fail(f"normalize_reward scales rewards by 1000 / (max return - min return), but the dataset's {len(returns)} "
             f"episode(s) all return {returns.max():.6g}; pass --normalize_reward false.")
    return 1000.0 / float(returns.max() - returns.min())


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma (1 - end_t) G_{t+1}: the discounted Monte Carlo return from each transition to the end of
    its episode.  An episode cut by a time limit counts nothing after the cut, like one that terminated, as Cal-QL's
    code does (nakamotoo/Cal-QL, JaxCQL/replay_buffer.py, calc_return_to_go with its dones, no bootstrap)."""
    r, end = rewards.tolist(), episode_ends.tolist()
    values, following = np.zeros(len(r), np.float64), 0.0
    for t in reversed(range(len(r))):
        following = r[t] + gamma * (1.0 - end[t]) * following
        values[t] = following
    return values.astype(np.float32)


def transitions(data: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, scale: float,
                gamma: Optional[float] = None) -> dict[str, np.ndarray]:
    """(s, a, r, s', done) with normalized states and rewards scaled by `scale`; with gamma, also the discounted
    return-to-go G of each transition, from its scaled rewards (what Cal-QL bounds Q with)."""
    out = {"observations": (data["observations"] - mean) / std, "actions": data["actions"],
           "rewards": data["rewards"] * scale, "next_observations": (data["next_observations"] - mean) / std,
           "terminals": data["terminals"]}
    if gamma is not None:
        out["returns_to_go"] = returns_to_go(out["rewards"], data["episode_ends"], gamma)
    return out


def transition_buffer(data: dict[str, np.ndarray], normalize_states: bool, normalize_reward: bool,
                      device: torch.device, gamma: Optional[float] = None):
    """DeviceBuffer of the dataset's transitions (with G when gamma is given), the state statistics (mean, std)
    that the policy needs at evaluation time, and the reward scale (what online episodes and model rollouts need)."""
    mean, std = state_statistics(data["observations"], normalize_states)
    scale = reward_scale(data, normalize_reward)
    return DeviceBuffer(transitions(data, mean, std, scale, gamma), device), mean, std, scale


def evaluate(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded episodes of the deterministic policy `act`, one after another: per episode the return,
    the return discounted by EVAL_DISCOUNT and the initial state."""
    returns, discounted, initial_states = [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        initial_states.append(obs)
        done, total, total_discounted, discount = False, 0.0, 0.0, 1.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total, total_discounted = total + float(reward), total_discounted + discount * float(reward)
            discount, done = discount * EVAL_DISCOUNT, terminated or truncated
        returns.append(total)
        discounted.append(total_discounted)
    return {"returns": np.asarray(returns), "discounted_returns": np.asarray(discounted),
            "initial_states": np.asarray(initial_states, np.float32)}


def checked_environment(dataset_id: str, dataset) -> gym.Env:
    """The dataset's evaluation environment, before training: a dataset without one (no environment spec), or whose
    observations or actions have another shape than the environment's, is one sentence."""
    try:
        env = dataset.recover_environment(eval_env=True)
    except Exception as e:  # noqa: BLE001 - no environment spec, or one this machine cannot make
        fail(f"dataset {dataset_id!r} names no environment that can be made here ({' '.join(str(e).split())}); "
             f"these scripts evaluate their policy in it.")
    for what, env_space, data_space in (("observations", env.observation_space, dataset.observation_space),
                                        ("actions", env.action_space, dataset.action_space)):
        if env_space.shape != data_space.shape:
            fail(f"dataset {dataset_id!r} has {what} of shape {data_space.shape}, but its environment "
                 f"{env.spec.id} has {env_space.shape}.")
    return env


def make_evaluator(config, dataset, policy: nn.Module, mean: np.ndarray, std: np.ndarray, device: torch.device,
                   q_initial: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Callable[[], dict]:
    """Evaluation of `policy` (normalized states -> deterministic actions) in the dataset's eval env.
    run() returns the logged metrics and, under "episodes", what evaluate() measured per episode.  With
    q_initial (normalized states -> the critic's Q(s, pi(s))), also its mean over the episodes' initial states:
    the critic's own estimate of the discounted_return beside it (extrapolation error)."""
    env = checked_environment(config.dataset_id, dataset)
    mean_t, std_t = torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        state = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean_t) / std_t
        return policy(state[None])[0].cpu().numpy()

    def run() -> dict:
        episodes = evaluate(env, act, config.eval_episodes, seed=config.seed + 10_000)
        result = {"return": episodes["returns"].mean(), "discounted_return": episodes["discounted_returns"].mean(),
                  "normalized_score": normalized_score(dataset, episodes["returns"]), "episodes": episodes}
        if q_initial is not None:
            with torch.no_grad():
                states = (torch.as_tensor(episodes["initial_states"], device=device) - mean_t) / std_t
                result["q_initial"] = q_initial(states).mean()
        return result

    return run


class DeployablePolicy(nn.Module):
    """Raw observations -> deterministic actions: the state normalization and the policy in one program."""

    def __init__(self, policy: nn.Module, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.policy = copy.deepcopy(policy).cpu().eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.policy((observations - self.mean) / self.std)


def export_policy(path: Path, policy: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """policy.pt2: a batch of raw observations [B, state_dim] -> deterministic actions [B, action_dim]; beside it,
    policy_weights.pt (policy_weights) when the policy is a tanh-squashed MLP, what fqe.py and tools read."""
    example = torch.zeros(2, len(mean))
    export_program(path, DeployablePolicy(policy, mean, std), (example,), ({0: torch.export.Dim.DYNAMIC},))
    weights = policy_weights(policy, mean, std)
    if weights is not None:
        torch.save(weights, path.with_name("policy_weights.partial.pt"))
        os.replace(path.with_name("policy_weights.partial.pt"), path.with_name(POLICY_WEIGHTS))


POLICY_WEIGHTS, WEIGHTS_FORMAT = "policy_weights.pt", "tanh-mlp-policy/1"


def policy_weights(policy: nn.Module, mean: np.ndarray, std: np.ndarray) -> Optional[dict]:
    """The policy as tensors and plain values only (torch.load(weights_only=True) reads them, and no code): the
    layers of policy.net, ReLU between them, the squashing max_action * tanh of the first action_dim outputs (the
    mean of a TanhGaussianPolicy's [mean, log_std]) and the state normalizer.  None when the policy is not such an
    MLP (bcq's), checked by comparing weights_policy's actions with the policy's own."""
    net, max_action = getattr(policy, "net", None), getattr(policy, "max_action", None)
    layers_ok = isinstance(net, nn.Sequential) and len(net) % 2 == 1 and all(
        isinstance(m, nn.Linear) if i % 2 == 0 else type(m) is nn.ReLU for i, m in enumerate(net))
    if not layers_ok or not isinstance(max_action, float):
        return None
    linears = [m for m in net if isinstance(m, nn.Linear)]
    probe = torch.randn(64, len(mean), generator=torch.Generator().manual_seed(0))  # the global RNG is not touched
    with torch.no_grad():
        actions = policy(probe.to(linears[0].weight.device)).float().cpu()
        weights = {"format": WEIGHTS_FORMAT, "activation": "relu",
                   "squashing": "max_action * tanh(outputs[:, :action_dim])", "action_dim": actions.shape[-1],
                   "max_action": max_action, "weights": [m.weight.detach().float().cpu().clone() for m in linears],
                   "biases": [m.bias.detach().float().cpu().clone() for m in linears],
                   "state_mean": torch.as_tensor(mean, dtype=torch.float32).clone(),
                   "state_std": torch.as_tensor(std, dtype=torch.float32).clone()}
        raw = probe * weights["state_std"] + weights["state_mean"]
        same = torch.allclose(weights_policy(weights)(raw), actions, atol=1e-5)
    return weights if same else None


def weights_policy(weights: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """policy_weights' dict -> raw observations [B, state_dim] -> actions [B, action_dim], a plain MLP."""
    def act(observations: torch.Tensor) -> torch.Tensor:
        x = (observations - weights["state_mean"]) / weights["state_std"]
        for i, (weight, bias) in enumerate(zip(weights["weights"], weights["biases"], strict=True)):
            x = nn.functional.linear(x, weight, bias)
            x = torch.relu(x) if i < len(weights["weights"]) - 1 else x
        return weights["max_action"] * torch.tanh(x[:, :weights["action_dim"]])

    return act
# --- transitions: end
