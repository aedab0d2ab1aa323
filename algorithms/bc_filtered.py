# %BC: behavior cloning on the best trajectories (Chen et al. 2021, "Decision Transformer",
# section 5.3; Emmons et al. 2022, "RvS").  Chapter: 21.3.2 "行为克隆正则化" and the
# "filter out low-return trajectories, then imitate" baseline of the offline RL overview.
#
#   D_frac = the top `frac` of the dataset's trajectories ranked by return  R(tau) = sum_t r_t
#   L_BC(phi) = E_{(s, a) ~ D_frac} || pi_phi(s) - a ||^2        (deterministic tanh actor)
#
# frac = 1.0 is plain behavior cloning.  No critic, no bootstrapping: the policy can only be as
# good as the best trajectories it imitates, which is the baseline every offline RL method must beat.
#
# License: MIT (the project's LICENSE file); copy this file anywhere, keeping this line.

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import gymnasium as gym
import numpy as np
import pyrallis
import torch
import torch.nn as nn
from tqdm import trange

@dataclass
class TrainConfig:
    """Common fields (the same in every script), then the method's: filtered behavior cloning (%BC)."""
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    max_steps: int = 1_000_000  # gradient updates
    batch_size: int = 256  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints, and policy.pt2)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    stop_after: int = 0  # updates this call may run before it checkpoints and exits (0: no limit); rerun to resume
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # torch.compile the update (same results as eager; faster after a warm-up)
    precision: str = "fp32"  # "fp32", or "bf16": the update's hidden layers in bf16 (autocast), outputs and losses fp32
    frac: float = 0.1  # frac, the fraction of trajectories kept, ranked by return (1.0 = plain BC)
    hidden_dim: int = 256  # width of the actor's two hidden layers
    actor_lr: float = 3e-4  # Adam learning rate of pi_phi; 3e-4 as CORL's algorithms/offline/any_percent_bc.py

    def __post_init__(self):  # check_ranges (appendix): these, and any other int >= 1, float >= 0, *_lr > 0
        check_ranges(self, frac="in (0, 1]")


# mlp, fit and the rest of the plumbing: the appendix (# --- shared) at the end of the file;
# transition_buffer, make_evaluator and export_policy: the block right after train().


class Actor(nn.Module):
    """Deterministic policy pi_phi(s) = max_action * tanh(MLP(s))."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float):
        super().__init__()
        self.net = mlp(state_dim, action_dim, hidden_dim)
        self.max_action = max_action

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(state))


def top_trajectories(episode_ids: np.ndarray, episode_returns: np.ndarray, frac: float) -> np.ndarray:
    """D_frac: mask of the transitions whose trajectory is among the top ceil(frac * N) by return."""
    ids, first = np.unique(episode_ids, return_index=True)
    n_keep = max(1, math.ceil(frac * len(ids)))
    kept = ids[np.argsort(-episode_returns[first], kind="stable")[:n_keep]]
    return np.isin(episode_ids, kept)


def actor_loss(actor: Actor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """L_BC(phi) = E_{(s, a) ~ D_frac} || pi_phi(s) - a ||^2."""
    return (actor(states) - actions).pow(2).sum(-1).mean()


class Trainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        self.device = device
        self.actor = Actor(state_dim, action_dim, config.hidden_dim, max_action).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), config.actor_lr, foreach=True)

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        pi_loss = actor_loss(self.actor, batch["observations"], batch["actions"])
        self.actor_optimizer.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.actor_optimizer.step()
        return {"actor_loss": pi_loss.detach()}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "actor_optimizer": self.actor_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)

    def policy(self) -> nn.Module:
        """Normalized states -> deterministic actions: what evaluation runs and policy.pt2 exports."""
        return self.actor


def train(config: TrainConfig) -> dict:
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    data = flatten_episodes(dataset)
    keep = top_trajectories(data["episode_ids"], data["episode_returns"], config.frac)
    kept = {k: v[keep] for k, v in data.items()}
    buffer, mean, std, _ = transition_buffer(kept, config.normalize_states, normalize_reward=False, device=device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = Trainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    policy = trainer.policy()
    print(f"%BC keeps {int(keep.sum())} of {len(keep)} transitions (frac {config.frac}).")
    return fit(config, algo="bc_filtered", data=data, trainer=trainer, sample=lambda: buffer.sample(config.batch_size),
               evaluate=make_evaluator(config, dataset, policy, mean, std, device),
               export=lambda path: export_policy(path, policy, mean, std), extra={"state_mean": mean, "state_std": std})


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


# --- shared: begin
# The plumbing every script shares, byte-identical in all of them: the command line, seeding and device, Minari
# loading and checks, normalization, mlp, the normalized score, the exported program, the run directory, logging,
# checkpoints and the training loop fit().  One source: tools/shared/appendix.py; edit it, run `python -m tools.sync_shared`.

EVAL_DISCOUNT = 0.99  # gamma of the discounted returns that evaluation logs beside the returns (for OPE)
MAX_MAGNITUDE = 1e6  # no observation, action or reward of these environments comes near it: a corrupt file
# Fields that do not change what is learned: a run may resume under other values of these.
RUN_FIELDS = ("eval_every", "eval_episodes", "checkpoints_path", "resume", "stop_after", "logging", "project",
              "device", "compile")


def fail(message: str) -> None:
    """Bad input ends the run with one sentence and a non-zero exit status, not a stack trace."""
    raise SystemExit(f"error: {message}")


def decode_bool(value) -> bool:
    """pyrallis's decoder of bool fields (YAML has read the text): true/false, yes/no or 1/0; `maybe` is refused."""
    if not isinstance(value, float) and str(value).lower() in ("true", "false", "yes", "no", "1", "0"):
        return str(value).lower() in ("true", "yes", "1")
    raise ValueError(f"must be true or false, got {value!r}")


def decode_int(value) -> int:
    """pyrallis's decoder of int fields: an integer; 1.5, and 5e9 (which YAML reads as text), are refused."""
    if isinstance(value, int) and not isinstance(value, bool) or str(value).strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError(f"must be an integer, got {value!r}")


def decode_float(value) -> float:
    """pyrallis's decoder of float fields: a finite number; text such as 1e-3 (YAML reads no float without a dot)
    through float(); nan, inf and 1e999 (inf to float()) are refused."""
    try:
        if not isinstance(value, bool) and math.isfinite(float(value)):
            return float(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"must be a finite number, got {value!r}")


for kind, decoder in ((bool, decode_bool), (int, decode_int), (float, decode_float)):
    pyrallis.decode.register(kind, decoder)
pyrallis.decode.register(Optional[int], lambda value: None if value is None else decode_int(value))


def check_ranges(config, **ranges) -> None:
    """Called by each TrainConfig's __post_init__: every field in its range, before anything is written.  `ranges`
    gives the script's own: "0 or more", "at least 1", "above 0", an interval such as "in [0, 1)", or a tuple of the
    allowed strings; any other integer is a count or a size (at least 1), any other float a weight, scale or rate
    (0 or more; a learning rate, *_lr, above 0)."""
    ranges = {"seed": f"in [0, {2 ** 32})", "stop_after": "0 or more", "logging": ("offline", "online", "disabled"),
              "precision": ("fp32", "bf16"), "batch_size": f"in [1, {2 ** 20}]",
              **{field.name: "above 0" for field in dataclasses.fields(config) if field.name.endswith("_lr")}, **ranges}
    for field in dataclasses.fields(config):
        name, value = field.name, getattr(config, field.name)
        what = ranges.get(name, {int: "at least 1", float: "0 or more"}.get(field.type))
        if isinstance(what, tuple):
            ok, what = value in what, f"{', '.join(what[:-1])} or {what[-1]}"
        elif isinstance(what, str) and what.startswith("in "):
            low, high = map(float, what[4:-1].split(","))
            ok = (low <= value, low < value)[what[3] == "("] and (value <= high, value < high)[what[-1] == ")"]
        else:
            ok = what is None or {"0 or more": value >= 0, "at least 1": value >= 1, "above 0": value > 0}[what]
        if not ok:
            fail(f"{name} must be {what}, got {value!r}.")


class ArgumentParser(pyrallis.argparsing.ArgumentParser):
    """pyrallis's parser (--help lists every field with its comment) whose complaints are one line, exit status 2:
    an unknown or abbreviated flag, a flag without its value, a stray word, and those of parse_config."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def parse_config(config_class):
    """TrainConfig through pyrallis: the YAML file of --config_path (an empty file: every default), then the
    --<field> <value> flags, each value through the strict decoders above, then the ranges (TrainConfig's
    __post_init__) and the device.  Bad input is one `error:` line, exit status 2, and nothing written."""
    import yaml

    parser = ArgumentParser(config_class=config_class, allow_abbrev=False)
    path_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    path_parser.add_argument("--config_path")
    try:
        known, argv = path_parser.parse_known_args()
        values = yaml.safe_load(Path(known.config_path).read_text(encoding="utf-8")) if known.config_path else None
    except argparse.ArgumentError as e:  # --config_path without its value
        parser.error(str(e))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        parser.error(f"config file {known.config_path} is not readable UTF-8 YAML ({' '.join(str(e).split())}).")
    names = {field.name: field.type in (str, Optional[str]) for field in dataclasses.fields(config_class)}  # True: text
    unknown = [f"a {type(values).__name__}"] if not isinstance(values, dict) else sorted(set(map(str, values)) - set(
        names)) + [f"{k}: {v}" for k, v in values.items() if names.get(k) and type(v) in (dict, list)]
    if values is not None and unknown:
        parser.error(f"config file {known.config_path} must map TrainConfig fields to values, "
                     f"not {', '.join(unknown)}; fields: {', '.join(names)}.")
    parser.config_path = known.config_path if values else None  # pyrallis reads the file, then the flags over it
    try:
        config = parser.parse_args(argv)
        pick_device(config.device)
    except pyrallis.ParsingError as e:  # '... field "<class ...>.name" of type ... error is "ValueError: why"'
        found = re.search(r'\.(\w+)" of type .*Underlying error is "\w+: (.*)"', str(e), re.S)
        why = found and (found[2] if found[2].startswith("must") else f"cannot be read: {found[2]}")
        parser.error(f"{found[1]} {why}." if found else " ".join(str(e).split()))
    except SystemExit as e:  # a fail() of a range check or of the device
        if not isinstance(e.code, str):  # --help, or the parser's own error()
            raise
        parser.error(e.code.removeprefix("error: "))
    return config


def set_seed(seed: int) -> None:
    for seed_with in (random.seed, np.random.seed, torch.manual_seed):
        seed_with(seed)


def pick_device(name: str) -> torch.device:
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        fail(f"unknown device {name!r}; use auto, cpu, cuda or cuda:<index>.")
    if device.type not in ("cpu", "cuda") or device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        fail(f"device {name!r} is not available on this machine ({torch.cuda.device_count()} CUDA devices); "
             f"use auto, cpu, cuda or cuda:<index>.")
    return device


def load_dataset(dataset_id: str):
    """Minari dataset from disk, else downloaded; a missing one, or one whose observations or actions are not flat
    continuous vectors (what these scripts handle), is one clear sentence."""
    import minari
    from minari.storage import get_dataset_path

    try:
        dataset = minari.load_dataset(dataset_id)
    except FileNotFoundError:
        try:
            dataset = minari.load_dataset(dataset_id, download=True)
        except Exception:  # noqa: BLE001 - no network, or an id the remote does not know
            fail(f"dataset {dataset_id!r} is not in {get_dataset_path(dataset_id)} nor downloadable; build local/ ids "
                 f"with python -m tools.make_datasets in this project's repository, or a Minari id: mujoco/hopper/medium-v0")
    except Exception as e:  # noqa: BLE001 - a malformed id or a broken dataset directory
        fail(f"could not load dataset {dataset_id!r}: {' '.join(str(e).split())}")
    spaces = (dataset.observation_space, dataset.action_space)
    if not all(isinstance(space, gym.spaces.Box) and len(space.shape) == 1 for space in spaces):
        fail(f"this script handles flat continuous observations and actions (Box vectors); "
             f"the dataset has observations {spaces[0]} and actions {spaces[1]}.")
    return dataset


def flatten_episodes(dataset) -> dict[str, np.ndarray]:
    """Episodes -> transitions; each episode's fields must match the dataset's spaces and its step count (the length
    of most of its fields).  terminals come from terminations only (a time-limit truncation is not a terminal);
    next_observations come from the same episode; episode_ids and episode_returns let methods work per trajectory."""
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals",
                               "episode_ends", "episode_ids", "episode_returns")}
    shapes = {"observations": dataset.observation_space.shape, "actions": dataset.action_space.shape, "rewards": (),
              "terminations": (), "truncations": ()}
    try:
        for i, ep in enumerate(dataset.iterate_episodes()):
            n = int(np.median([len(getattr(ep, key)) - (key == "observations") for key in shapes]))
            for key, shape in ((key, (n + (key == "observations"), *shape)) for key, shape in shapes.items()):
                if np.shape(getattr(ep, key)) != shape:
                    fail(f"dataset {dataset.spec.dataset_id!r}: episode {i}'s {key} have shape "
                         f"{np.shape(getattr(ep, key))}, not {shape} (its other fields have {n} steps).")
            for column, value in zip(columns.values(), (
                    ep.observations[:-1], ep.actions, ep.rewards, ep.observations[1:], ep.terminations,
                    np.arange(n) == n - 1, np.full(n, i), np.full(n, np.sum(ep.rewards, dtype=np.float64)))):
                column.append(value)
    except Exception as e:  # noqa: BLE001 - a truncated or corrupted data file
        fail(f"dataset {dataset.spec.dataset_id!r} cannot be read ({type(e).__name__}); rebuild or download it again.")
    if not columns["rewards"] or sum(map(len, columns["rewards"])) == 0:
        fail(f"dataset {dataset.spec.dataset_id!r} holds no transitions.")
    data = {k: np.concatenate(v) for k, v in columns.items()}
    for key in ("observations", "actions", "rewards", "next_observations"):
        values = np.asarray(data[key], np.float64).reshape(len(data[key]), -1)
        bad = np.flatnonzero(~(np.abs(values) <= MAX_MAGNITUDE).all(1))
        if len(bad):
            fail(f"dataset {dataset.spec.dataset_id!r} has a non-finite or absurd value (beyond {MAX_MAGNITUDE:g}) "
                 f"in {key} at transition {bad[0]}.")
    return {k: v if k == "episode_ids" else v.astype(np.float32) for k, v in data.items()}


def data_summary(dataset_id: str, data: Optional[dict[str, np.ndarray]]) -> Optional[dict]:
    """The id, episodes, transitions and a content hash of flatten_episodes' arrays, for run.json: two builds of a
    dataset id (builds of a collected dataset on two machines have differed) are told apart."""
    digest = hashlib.sha256()
    for key in sorted(data or {}):
        digest.update(key.encode() + np.ascontiguousarray(data[key]).tobytes())
    return data and {"id": dataset_id, "episodes": int(data["episode_ends"].sum()), "transitions": len(data["rewards"]),
                     "sha256": digest.hexdigest()}


def state_statistics(observations: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the observations, computed in float64 so that large values cannot overflow."""
    if not enabled:
        return np.zeros(observations.shape[1], np.float32), np.ones(observations.shape[1], np.float32)
    values = np.asarray(observations, np.float64)
    return values.mean(0).astype(np.float32), (values.std(0) + 1e-3).astype(np.float32)


class OutputLinear(nn.Linear):
    """A network's output layer: fp32 even under --precision bf16, whose autocast runs only the hidden layers in bf16
    (CPU autocast keeps exp, logsumexp, tanh, ... in bf16 once fed bf16), so Q- and V-values, means and log-stds,
    and all computed from them (targets, losses, weights, log-probabilities) stay fp32; under fp32, nn.Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int = 2) -> nn.Sequential:
    dims = [in_dim] + [hidden_dim] * n_hidden
    hidden = [layer for d_in, d_out in zip(dims, dims[1:]) for layer in (nn.Linear(d_in, d_out), nn.ReLU())]
    return nn.Sequential(*hidden, OutputLinear(dims[-1], out_dim))


def normalized_score(dataset, returns: np.ndarray) -> float:
    """D4RL score: 100 * (return - random) / (expert - random); NaN when the dataset has no references."""
    import minari

    try:
        return float(100 * np.mean(minari.get_normalized_score(dataset, returns)))
    except Exception:  # noqa: BLE001 - datasets without ref_min_score / ref_max_score
        return math.nan


def export_program(path: Path, module: nn.Module, example_inputs: tuple, dynamic_shapes) -> None:
    """A torch.export program that `torch.export.load(path).module()` runs with torch alone (.pt2 is
    torch.export's suffix).  Loading a .pt2 runs code its author chose: load only files you trust."""
    with torch.no_grad():
        program = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes)
    tmp = path.with_name(path.stem + ".partial.pt2")
    torch.export.save(program, tmp)
    os.replace(tmp, path)


def run_directory(config, algo: str) -> Path:
    return Path(config.checkpoints_path or os.path.join("runs", algo, config.dataset_id, f"seed{config.seed}"))


def learning_fields(config, fixed: tuple[str, ...]) -> dict:
    """The fields that decide what is learned (max_steps only where a schedule depends on it: `fixed`)."""
    return {k: v for k, v in asdict(config).items() if k not in RUN_FIELDS and (k != "max_steps" or k in fixed)}


def open_run(config, algo: str, fixed: tuple[str, ...], data: Optional[dict]) -> tuple[Path, object]:
    """The locked run directory and its run.json, the record of the config the run started with and of the data it
    read: a resume under other learning fields is refused; with --resume false an earlier run there is moved aside
    whole."""
    run_dir = run_directory(config, algo)
    lock = lock_run(run_dir)
    files = [record := run_dir / "run.json", *(run_dir / n for n in ("checkpoint.pt", "log.jsonl", "finished.json"))]
    learning, kept = learning_fields(config, fixed), [f for f in files if f.exists() and f.stat().st_size]
    if kept and (not config.resume or files[1] not in kept and kept != [record]):  # a run without its checkpoint too
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(run_dir, aside)
        print(f"the earlier run in {run_dir} was moved to {aside}.")
        lock.close()
        lock = lock_run(run_dir)
    elif record.exists():
        before = (read_json(record) or {}).get("config")
        changed = [f"{k}: {before[k]!r} there, {v!r} now" for k, v in learning.items() if before.get(k, v) != v] \
            if isinstance(before, dict) else ["its run.json is not readable"]
        if changed:
            lock.close()
            fail(f"{run_dir} holds a run of another config ({'; '.join(changed)}); pass --resume false to "
                 f"start it over, or another --checkpoints_path.")
    write_atomic(record, json.dumps({"algo": algo, "config": asdict(config), "torch": torch.__version__,
                                     "dataset": data_summary(config.dataset_id, data),
                                     "command": [Path(sys.executable).name, *sys.argv]}, indent=1))
    print(f"run directory: {run_dir}", flush=True)
    return run_dir, lock


def lock_run(run_dir: Path):
    """An exclusive lock on run_dir/run.lock, held until the process ends (kill -9 releases it too); none where the
    OS has no fcntl (Windows)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / "run.lock", "w")
    except OSError as e:
        fail(f"cannot write the run directory {run_dir} ({e.strerror or type(e).__name__}); pass another --checkpoints_path.")
    try:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except BlockingIOError:
        fail(f"another run is writing {run_dir}; wait for it, or pass another --checkpoints_path.")
    return lock


def read_json(path: Path) -> Optional[dict]:
    """The JSON object in path, else None (a missing, cut or foreign file)."""
    try:
        return value if isinstance(value := json.loads(path.read_text()), dict) else None
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLog:
    """A JSON-lines file beside the checkpoints, plus wandb unless logging is "disabled".  wall_time counts
    the seconds of the whole run: a resumed run starts its clock at the `elapsed` its checkpoint carried,
    and the rows written after that checkpoint (by an interrupted call, a last one cut by a kill included) are dropped.
    A non-finite loss ends the run, its row written, the last good checkpoint kept."""

    def __init__(self, config, algo: str, run_dir: Path, start: int, elapsed: float, fixed: tuple[str, ...],
                 counters: Callable[[], dict] = dict):
        path, self.run_dir = run_dir / "log.jsonl", run_dir
        rows = [r for r in path.read_text().split("\n")[:-1] if json.loads(r)["step"] <= start] if path.exists() else []
        write_atomic(path, "".join(r + "\n" for r in rows))
        self.last = json.loads(rows[-1]) if rows else {}
        self.file, self.start, self.counters = open(path, "a"), time.time() - elapsed, counters
        self.wandb = None
        if config.logging != "disabled":
            import wandb
            identity = hashlib.sha1(json.dumps(learning_fields(config, fixed), sort_keys=True).encode()).hexdigest()
            name = f"{algo}-{config.dataset_id}-seed{config.seed}"
            self.wandb = wandb.init(mode=config.logging, project=config.project, dir=str(run_dir),
                                    config=asdict(config), name=name, group=algo, resume="allow",
                                    id=f"{name}-{identity[:8]}".replace("/", "-"), settings=wandb.Settings(silent=True))

    def write(self, step: int, metrics: dict) -> dict:
        values, counters = {k: float(v) for k, v in metrics.items()}, self.counters()  # the only host sync: log time
        self.file.write(json.dumps({"step": step, **counters, "wall_time": self.elapsed(), **values}) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log({**counters, **values}, step=step)
        if not all(math.isfinite(v) for k, v in values.items() if k.startswith("train/")):
            self.close()
            fail(f"a loss became NaN or infinite at update {step}; the last good checkpoint is kept in {self.run_dir}.")
        return values

    def elapsed(self) -> float:
        return time.time() - self.start

    def close(self) -> None:
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish()


def save_checkpoint(path: Path, step: int, trainer, config, extra: dict, wall_time: float) -> None:
    """What trainer.state_dict() declares, the RNG states, `extra` and the seconds trained so far, in plain
    types and tensors only (so that loading can refuse anything else); written to a temporary file then
    renamed, so an interrupted save never replaces a good checkpoint."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"step": step, "trainer": trainer.state_dict(), "config": asdict(config), "wall_time": wall_time,
             "extra": {k: torch.as_tensor(v) for k, v in extra.items()},
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), position, has_gauss, gauss],
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def resume(path: Path, trainer, device: torch.device) -> tuple[int, float]:
    """Loads the trainer and the RNG states; returns the update and the seconds trained so far.  Only tensors and
    plain values are loaded: a file holding anything else (objects whose loading could run code, as checkpoints of
    the older, pickled format do) is refused."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or unsafe files
        fail(f"checkpoint {path} is corrupt, of an older format, or holds objects other than tensors and plain "
             f"values ({type(e).__name__}); it was not loaded: delete it or pass --resume false.")
    try:
        trainer.load_state_dict(state["trainer"])
        rng, step, wall_time = state["rng"], state["step"], state["wall_time"]
        kind, keys, position, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in rng["python"]))
        torch.set_rng_state(rng["torch"].cpu())
    except (KeyError, RuntimeError, ValueError, AttributeError, TypeError, IndexError) as e:
        fail(f"checkpoint {path} does not match this script and config ({type(e).__name__}); "
             f"delete it or pass --resume false.")
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return step, wall_time


def fit(config, *, algo: str, trainer, sample: Callable[[], dict], evaluate: Callable[[], dict],
        export: Callable[[Path], None] = lambda path: None, extra: Optional[dict] = None,
        fixed: tuple[str, ...] = (), steps: Optional[int] = None, data: Optional[dict] = None) -> dict:
    """The loop every script shares.  The trainer's contract: update(batch, step) -> dict of detached tensors
    (step = 1, 2, ... counts updates, for host-side schedules), state_dict() / load_state_dict() (what a checkpoint
    holds), an attribute `device`, and optionally prepare(run_dir), called in the locked run directory before the
    loop (a dynamics model), periodic(step), before every update (refreshing returns, rollouts, online episodes),
    and counters(), host numbers in every log row beside step (env_steps); the update runs under bf16 autocast when
    config.precision is bf16 (periodic work, evaluation and export in fp32).  `steps`: the run's updates, max_steps
    unless an online phase adds its own.  Every eval_every updates, at max_steps and at the end: evaluate, log,
    checkpoint, and export(run_dir / "policy.pt2").  `fixed`: fields besides the learning ones that a resume may not
    change (max_steps, where a schedule depends on it).  stop_after or a signal ends the call early with a
    checkpoint that the same command resumes.  `data`: flatten_episodes' arrays, whose size and hash run.json
    records.  A finished run writes finished.json (its last evaluation); returns the last evaluation."""
    run_dir, lock = open_run(config, algo, fixed, data)
    with lock:  # released when this call ends, however it ends
        checkpoint, finished = run_dir / "checkpoint.pt", run_dir / "finished.json"
        start, elapsed = resume(checkpoint, trainer, trainer.device) if checkpoint.exists() else (0, 0.0)
        getattr(trainer, "prepare", lambda run_dir: None)(run_dir)
        total = config.max_steps if steps is None else steps
        if start >= total and (done := read_json(finished)) is not None:
            print(f"{run_dir}: already trained for {start} updates (of {total}); nothing to do.")
            return done
        finished.unlink(missing_ok=True)  # a continuation (a larger max_steps): not finished until it ends
        update = torch.compile(trainer.update) if config.compile else trainer.update
        periodic = getattr(trainer, "periodic", lambda step: None)
        log = RunLog(config, algo, run_dir, start, elapsed, fixed, getattr(trainer, "counters", dict))
        log_every = max(1, min(1000, config.eval_every))
        last = min(total, start + config.stop_after) if config.stop_after else total
        stop, result = [], {}  # stop: SIGINT (Ctrl-C) or SIGTERM asks to checkpoint after the current update and exit
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.append(signum))
        for step in trange(start + 1, last + 1, desc=f"{algo} {config.dataset_id}", mininterval=5):
            periodic(step)
            with torch.autocast(trainer.device.type, torch.bfloat16, enabled=config.precision == "bf16"):
                metrics = update(sample(), step)  # hidden layers in bf16 under bf16, outputs fp32 (OutputLinear)
            if step % config.eval_every == 0 or step in (config.max_steps, total):  # evaluate, log, checkpoint, export
                evaluation = {f"eval/{k}": v for k, v in evaluate().items() if k != "episodes"}
                values = log.write(step, {**{f"train/{k}": v for k, v in metrics.items()}, **evaluation})
                save_checkpoint(checkpoint, step, trainer, config, extra or {}, log.elapsed())
                export(run_dir / "policy.pt2")
                result = {k: v for k, v in values.items() if k.startswith("eval/")}
                print(f"step {step}: " + ", ".join([f"{k} {v}" for k, v in log.counters().items()]
                                                   + [f"{k[5:]} {v:.2f}" for k, v in result.items()]), flush=True)
            elif step % log_every == 0:
                log.write(step, {f"train/{k}": v for k, v in metrics.items()})
            if stop or (step == last < total):
                save_checkpoint(checkpoint, step, trainer, config, extra or {}, log.elapsed())
                log.close()
                print(f"stopped at update {step} of {total}; the same command resumes from {checkpoint}.")
                if stop:
                    raise SystemExit(128 + stop[0])
                return result
        if start >= total:  # the last update and its evaluation were done; the call ended before this
            result = {k: v for k, v in log.last.items() if k.startswith("eval/")}
            export(run_dir / "policy.pt2")
        log.close()
        write_atomic(finished, json.dumps({"step": total, **result}))
        return result
# --- shared: end


if __name__ == "__main__":
    train(parse_config(TrainConfig))
