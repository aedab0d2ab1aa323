"""Canonical source of the `transitions` block: the dataset as (s, a, r, s', done) on the device,
with the state statistics and the reward scaling, for every script that samples transitions
(tools/sync_shared.py lists them). Edit here, then run `python tools/sync_shared.py`."""

import numpy as np
import torch

# --- transitions: begin
def reward_scale(data: dict[str, np.ndarray], enabled: bool) -> float:
    """1000 / (max return - min return) over trajectories (Kostrikov et al. 2022, appendix B)."""
    if not enabled:
        return 1.0
    returns = data["episode_returns"][data["episode_ends"] > 0]
    return 1000.0 / max(float(returns.max() - returns.min()), 1e-6)


def transition_buffer(data: dict[str, np.ndarray], normalize_states: bool, normalize_reward: bool,
                      device: torch.device):
    """DeviceBuffer of (s, a, r, s', done) with normalized states and scaled rewards, and the
    state statistics (mean, std) that the policy needs at evaluation time."""
    mean, std = state_statistics(data["observations"], normalize_states)
    transitions = {
        "observations": (data["observations"] - mean) / std,
        "actions": data["actions"],
        "rewards": data["rewards"] * reward_scale(data, normalize_reward),
        "next_observations": (data["next_observations"] - mean) / std,
        "terminals": data["terminals"],
    }
    return DeviceBuffer(transitions, device), mean, std
# --- transitions: end
