"""Canonical source of the `transitions` block: the dataset as (s, a, r, s', done) on the device,
with the state statistics and the reward scaling, for every script that samples transitions
(tools/sync_shared.py lists them). Edit here, then run `python tools/sync_shared.py`."""

from typing import Optional

import numpy as np
import torch

# --- transitions: begin
def reward_scale(data: dict[str, np.ndarray], enabled: bool) -> float:
    """1000 / (max return - min return) over trajectories (Kostrikov et al. 2022, appendix B)."""
    if not enabled:
        return 1.0
    returns = data["episode_returns"][data["episode_ends"] > 0]
    return 1000.0 / max(float(returns.max() - returns.min()), 1e-6)


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
    """DeviceBuffer of the dataset's transitions (with G when gamma is given), and the state statistics
    (mean, std) that the policy needs at evaluation time."""
    mean, std = state_statistics(data["observations"], normalize_states)
    scale = reward_scale(data, normalize_reward)
    return DeviceBuffer(transitions(data, mean, std, scale, gamma), device), mean, std
# --- transitions: end
