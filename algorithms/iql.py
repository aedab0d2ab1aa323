# IQL: Implicit Q-Learning (Kostrikov, Nair, Levine 2022, "Offline Reinforcement Learning with
# Implicit Q-Learning").  Chapter: 21.5 "Implicit Q-Learning (IQL)" and the robotics document's
# "IQL (Implicit Q-Learning)" section.
#
#   L_V(psi)   = E_{(s,a)~D} [ L_2^tau( Q_theta_hat(s, a) - V_psi(s) ) ],  L_2^tau(u) = |tau - 1(u < 0)| u^2
#   L_Q(theta) = E_{(s,a,r,s')~D} [ ( r + gamma V_psi(s') - Q_theta(s, a) )^2 ]
#   L_pi(phi)  = -E_{(s,a)~D} [ exp( beta (Q_theta_hat(s, a) - V_psi(s)) ) log pi_phi(a|s) ]   (AWR, weight clipped)
#
# Q_theta_hat is the minimum of the two target critics.  V never sees an action outside the
# dataset, and neither does Q's target: no max_a Q(s', a'), hence no OOD query.

import copy
import dataclasses
import io
import json
import math
import os
import random
import re
import signal
import sys
import time
from contextlib import redirect_stderr
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
    """Common fields (the same in every script), then the method's: IQL."""
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    max_steps: int = 1_000_000  # gradient updates
    batch_size: int = 256  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints, and policy.pt)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    stop_after: int = 0  # updates this call may run before it checkpoints and exits (0: no limit); rerun to resume
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # capture the update with torch.compile(fullgraph=True)
    normalize_reward: bool = True  # scale rewards by 1000 / (max return - min return), as IQL does
    expectile: float = 0.7  # tau in L_2^tau
    beta: float = 3.0  # beta, inverse temperature of the AWR weights exp(beta * A)
    max_weight: float = 100.0  # clip of exp(beta * A)
    gamma: float = 0.99  # gamma, discount
    tau: float = 0.005  # Polyak rate of the target critics
    hidden_dim: int = 256  # width of the two hidden layers of every network
    critic_lr: float = 3e-4  # Adam learning rate of Q_theta
    value_lr: float = 3e-4  # Adam learning rate of V_psi
    actor_lr: float = 3e-4  # Adam learning rate of pi_phi (cosine-annealed over max_steps)


# --- critic: begin
class VectorizedLinear(nn.Module):
    """n independent linear layers applied in one batched matmul: x [n, B, in] -> [n, B, out]."""

    def __init__(self, in_features: int, out_features: int, n: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # the same initialization as nn.Linear
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleCritic(nn.Module):
    """Q_1..Q_n(s, a) as one module with stacked weights: returns [n, B]."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, n: int = 2, n_hidden: int = 2):
        super().__init__()
        dims = [state_dim + action_dim] + [hidden_dim] * n_hidden
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [VectorizedLinear(d_in, d_out, n), nn.ReLU()]
        self.net = nn.Sequential(*layers, VectorizedLinear(dims[-1], 1, n))
        self.n = n

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([state, action], -1)
        x = x.unsqueeze(0).expand(self.n, *x.shape) if x.dim() == 2 else x
        return self.net(x).squeeze(-1)
# --- critic: end


class GaussianPolicy(nn.Module):
    """pi_phi(a|s) = N(max_action * tanh(mu(s)), diag(exp(log_std))) with a state-independent
    log_std, as in the IQL paper's MuJoCo policy; forward gives the mean, the deterministic action."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float):
        super().__init__()
        self.net = mlp(state_dim, action_dim, hidden_dim)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.max_action = max_action

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(state))

    def log_prob(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        std = self.log_std.clamp(-5.0, 2.0).exp()
        return torch.distributions.Normal(self(state), std).log_prob(action).sum(-1)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """L_2^tau(u) = |tau - 1(u < 0)| u^2, with u = Q(s, a) - V(s)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def value_loss(value: nn.Module, q_target: torch.Tensor, states: torch.Tensor, expectile: float) -> torch.Tensor:
    """L_V(psi) = E_{(s,a)~D} L_2^tau( min_i Q_target_i(s, a) - V_psi(s) )."""
    return expectile_loss(q_target - value(states).squeeze(-1), expectile)


def q_loss(critic: EnsembleCritic, batch: dict, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """L_Q(theta) = E_{(s,a,r,s')~D} sum_i ( r + gamma (1 - d) V_psi(s') - Q_theta_i(s, a) )^2."""
    target = batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_v
    return (critic(batch["observations"], batch["actions"]) - target).pow(2).mean(1).sum()


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """w = min(exp(beta * (Q(s, a) - V(s))), max_weight), beta the inverse temperature."""
    return torch.exp(beta * advantage).clamp(max=max_weight)


def policy_loss(policy: GaussianPolicy, batch: dict, weights: torch.Tensor) -> torch.Tensor:
    """L_pi(phi) = -E_{(s,a)~D} [ w(s, a) log pi_phi(a|s) ]."""
    return -(weights * policy.log_prob(batch["observations"], batch["actions"])).mean()


class IQLTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        self.device = device
        self.critic = EnsembleCritic(state_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = mlp(state_dim, 1, config.hidden_dim).to(device)
        self.actor = GaussianPolicy(state_dim, action_dim, config.hidden_dim, max_action).to(device)
        self.critic_optimizer = Optimizer(self.critic.parameters(), config.critic_lr)
        self.value_optimizer = Optimizer(self.value.parameters(), config.value_lr)
        self.actor_optimizer = Optimizer(self.actor.parameters(), config.actor_lr,
                                         schedule=lambda t: 0.5 * (1 + torch.cos(math.pi * t / config.max_steps)))
        self.expectile, self.beta, self.max_weight = config.expectile, config.beta, config.max_weight
        self.gamma, self.tau = config.gamma, config.tau

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        states = batch["observations"]
        with torch.no_grad():
            q_target = self.critic_target(states, batch["actions"]).min(0).values
            next_v = self.value(batch["next_observations"]).squeeze(-1)

        v_loss = value_loss(self.value, q_target, states, self.expectile)
        self.value_optimizer.step(v_loss)

        critic_loss = q_loss(self.critic, batch, next_v, self.gamma)
        self.critic_optimizer.step(critic_loss)

        # The chapter's sketch uses the online Q, exp(A / beta) and a V with gradient; the paper
        # (Kostrikov et al. 2022, eq. 7) uses min of the target Qs, exp(beta * A) and a fixed V.
        with torch.no_grad():
            advantage = q_target - self.value(states).squeeze(-1)
            weights = awr_weights(advantage, self.beta, self.max_weight)
        actor_loss = policy_loss(self.actor, batch, weights)
        self.actor_optimizer.step(actor_loss)

        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.tau)
        return {"value_loss": v_loss.detach(), "q_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "advantage": advantage.mean(), "q": q_target.mean()}

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "value": self.value.state_dict(), "actor": self.actor.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "value_optimizer": self.value_optimizer.state_dict(), "actor_optimizer": self.actor_optimizer.state_dict()}

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
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std = transition_buffer(data, config.normalize_states, config.normalize_reward, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = IQLTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    policy = trainer.policy()
    return fit(config, "iql", trainer, lambda: buffer.sample(config.batch_size),
               make_evaluator(config, dataset, policy, mean, std, device),
               lambda path: export_policy(path, policy, mean, std), {"state_mean": mean, "state_std": std})


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


# --- shared: begin
# The plumbing every script shares, byte-identical in all of them: bad input, seeding and device,
# Minari loading and flattening, normalization, the device-resident buffer, the MLP, the optimizer,
# evaluation, the deployable policy, logging, checkpoints and the training loop.  Its one source is
# tools/shared/appendix.py: edit it there, then run tools/sync_shared.py.

EVAL_DISCOUNT = 0.99  # gamma of the discounted returns that evaluation logs beside the returns (for OPE)


def fail(message: str) -> None:
    """Bad input ends the run with one sentence and a non-zero exit status, not a stack trace."""
    raise SystemExit(f"error: {message}")


def config_paths(argv: list[str]) -> list[str]:
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config_path=")]
    return paths + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config_path"]


def check_config_file(path: str, config_class) -> None:
    import yaml

    if not os.path.isfile(path):
        fail(f"config file {path} does not exist.")
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        fail(f"config file {path} is not valid YAML ({' '.join(str(e).split())}).")
    if not isinstance(values, dict):
        fail(f"config file {path} must be a mapping of TrainConfig fields to values.")
    unknown = set(values) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        fail(f"config {path} has unknown key(s) {', '.join(sorted(unknown))}; "
             f"valid keys: {', '.join(f.name for f in dataclasses.fields(config_class))}.")


def parse_config(config_class):
    """TrainConfig from the YAML file and the command line; every bad value is one sentence."""
    for path in config_paths(sys.argv[1:]):
        check_config_file(path, config_class)
    messages = io.StringIO()
    try:
        with redirect_stderr(messages):
            config = pyrallis.parse(config_class=config_class)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        fail(messages.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1] + ".")
    except Exception as e:  # noqa: BLE001 - pyrallis' decoding errors: a value of the wrong type
        wrong = re.search(r"value='(.*?)' into field .*?\.(\w+)\" of type (?:<class '(\w+)'>|([\w\[\], ]+))", str(e))
        fail(f"{wrong[2]} must be of type {wrong[3] or wrong[4]}, got {wrong[1]!r}." if wrong
             else " ".join(str(e).split()))
    check_common_fields(config)
    return config


def check_common_fields(config) -> None:
    for name in ("max_steps", "batch_size", "eval_every", "eval_episodes"):
        if getattr(config, name) < 1:
            fail(f"{name} must be at least 1, got {getattr(config, name)}.")
    if config.stop_after < 0:
        fail(f"stop_after must be 0 (no stop) or a positive number of updates, got {config.stop_after}.")
    pick_device(config.device)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"unknown device {name!r}; use auto, cpu, cuda or cuda:<index>.")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        fail(f"device {name!r} is not available on this machine ({torch.cuda.device_count()} CUDA devices).")
    if device.type not in ("cpu", "cuda"):
        fail(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:<index>.")
    return device


def load_dataset(dataset_id: str):
    """Minari dataset from disk, else downloaded; a missing one is one clear sentence."""
    import minari
    from minari.storage import get_dataset_path

    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        pass
    except Exception as e:  # noqa: BLE001 - a malformed id or a broken dataset directory
        fail(f"could not load dataset {dataset_id!r}: {e}")
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception:  # noqa: BLE001 - no network, or an id the remote does not know
        fail(f"dataset {dataset_id!r} is not in {get_dataset_path(dataset_id)} and could not be downloaded; "
             f"build the local datasets with: python tools/make_datasets.py")


def check_continuous(dataset) -> None:
    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(act_space, gym.spaces.Box) or not isinstance(obs_space, gym.spaces.Box) \
            or len(obs_space.shape) != 1 or len(act_space.shape) != 1:
        fail(f"this script handles flat continuous observations and actions (Box vectors); "
             f"the dataset has observations {obs_space} and actions {act_space}.")


def flatten_episodes(dataset) -> dict[str, np.ndarray]:
    """Episodes -> transitions.  terminals come from terminations only (a time-limit truncation
    is not a terminal); next_observations come from the same episode; episode_ids and
    episode_returns let methods work per trajectory."""
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals",
                               "episode_ends", "episode_ids", "episode_returns")}
    for i, ep in enumerate(dataset.iterate_episodes()):
        length = len(ep.rewards)
        ends = np.zeros(length, np.float32)
        ends[-1] = 1.0
        columns["observations"].append(ep.observations[:-1])
        columns["next_observations"].append(ep.observations[1:])
        columns["actions"].append(ep.actions)
        columns["rewards"].append(ep.rewards)
        columns["terminals"].append(ep.terminations)
        columns["episode_ends"].append(ends)
        columns["episode_ids"].append(np.full(length, i))
        columns["episode_returns"].append(np.full(length, ep.rewards.sum()))
    data = {k: np.concatenate(v) for k, v in columns.items()}
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_returns"):
        data[k] = data[k].astype(np.float32)
    return data


def state_statistics(observations: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    if not enabled:
        return np.zeros(observations.shape[1], np.float32), np.ones(observations.shape[1], np.float32)
    return observations.mean(0), observations.std(0) + 1e-3


class DeviceBuffer:
    """Arrays of equal length as tensors on the training device; batch indices are drawn there too."""

    def __init__(self, data: dict[str, np.ndarray], device: torch.device):
        self.data = {k: torch.as_tensor(np.asarray(v, np.float32), device=device) for k, v in data.items()}
        self.size = len(next(iter(self.data.values())))
        self.device = device

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int = 2) -> nn.Sequential:
    layers, dim = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU()]
        dim = hidden_dim
    return nn.Sequential(*layers, nn.Linear(dim, out_dim))


class Optimizer:
    """Adam (Kingma & Ba 2015), AdamW's decoupled weight decay, or SGD with momentum, computed as
    torch.optim computes them but written out, so that a whole update (losses, gradients and steps)
    compiles as one graph: torch.optim's step() and Tensor.backward() break the graph (torch 2.13).
    step(loss) differentiates `loss` with respect to this optimizer's parameters only: an actor's loss
    through the critic computes no critic gradients.  schedule(t) multiplies lr at the update after t
    updates (t = 0, 1, ...), as torch's LambdaLR; max_grad_norm clips the gradients' global norm first."""

    def __init__(self, params, lr: float, kind: str = "adam", betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0, max_grad_norm: float = math.inf,
                 schedule: Callable[[torch.Tensor], torch.Tensor] = lambda t: 1.0):
        self.params = list(params)
        self.lr, self.kind, self.betas, self.eps = lr, kind, betas, eps
        self.weight_decay, self.momentum, self.max_grad_norm, self.schedule = weight_decay, momentum, max_grad_norm, schedule
        self.steps = torch.zeros((), device=self.params[0].device)
        self.moments = [torch.zeros_like(p) for p in self.params]  # Adam's m, or SGD's momentum buffer
        self.second_moments = [torch.zeros_like(p) for p in self.params] if kind == "adam" else []  # Adam's v

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """One update of the parameters down the gradient of `loss`; returns the gradients' global norm."""
        grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            if math.isfinite(self.max_grad_norm):
                grads = torch._foreach_mul(grads, (self.max_grad_norm / (norm + 1e-6)).clamp(max=1.0))
            lr = self.lr * self.schedule(self.steps)
            self.steps.add_(1)
            if self.kind == "sgd":
                torch._foreach_mul_(self.moments, self.momentum)
                torch._foreach_add_(self.moments, grads)
                torch._foreach_sub_(self.params, torch._foreach_mul(self.moments, lr))
                return norm
            beta1, beta2 = self.betas
            if self.weight_decay:
                torch._foreach_mul_(self.params, 1 - lr * self.weight_decay)
            torch._foreach_lerp_(self.moments, grads, 1 - beta1)
            torch._foreach_mul_(self.second_moments, beta2)
            torch._foreach_addcmul_(self.second_moments, grads, grads, 1 - beta2)
            bias1, bias2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
            denominators = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(self.second_moments),
                                                                 bias2.sqrt()), self.eps)
            updates = torch._foreach_div(self.moments, denominators)
            torch._foreach_sub_(self.params, torch._foreach_mul(updates, lr / bias1))
        return norm

    def state_dict(self) -> dict:
        return {"steps": self.steps, "moments": self.moments, "second_moments": self.second_moments}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.steps.copy_(state["steps"])
            torch._foreach_copy_(self.moments, state["moments"])
            if self.second_moments:  # SGD keeps none
                torch._foreach_copy_(self.second_moments, state["second_moments"])


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
            total += float(reward)
            total_discounted += discount * float(reward)
            discount *= EVAL_DISCOUNT
            done = terminated or truncated
        returns.append(total)
        discounted.append(total_discounted)
    return {"returns": np.asarray(returns), "discounted_returns": np.asarray(discounted),
            "initial_states": np.asarray(initial_states, np.float32)}


def normalized_score(dataset, returns: np.ndarray) -> float:
    """D4RL score: 100 * (return - random) / (expert - random); NaN when the dataset has no references."""
    import minari

    try:
        return float(100 * np.mean(minari.get_normalized_score(dataset, returns)))
    except Exception:  # noqa: BLE001 - datasets without ref_min_score / ref_max_score
        return math.nan


def make_evaluator(config, dataset, policy: nn.Module, mean: np.ndarray, std: np.ndarray,
                   device: torch.device) -> Callable[[], dict]:
    """Evaluation of `policy` (normalized states -> deterministic actions) in the dataset's eval env.
    run() returns the logged metrics and, under "episodes", what evaluate() measured per episode."""
    env = dataset.recover_environment(eval_env=True)
    mean_t, std_t = torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        state = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean_t) / std_t
        return policy(state[None])[0].cpu().numpy()

    def run() -> dict:
        episodes = evaluate(env, act, config.eval_episodes, seed=config.seed + 10_000)
        return {"return": episodes["returns"].mean(), "discounted_return": episodes["discounted_returns"].mean(),
                "normalized_score": normalized_score(dataset, episodes["returns"]), "episodes": episodes}

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


def export_program(path: Path, module: nn.Module, example_inputs: tuple, dynamic_shapes) -> None:
    """A torch.export program that `torch.export.load(path).module()` runs with torch alone (.pt2 is
    torch.export's file suffix); written to a temporary file then renamed, like the checkpoint."""
    with torch.no_grad():
        program = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes)
    tmp = path.with_name(path.stem + ".partial.pt2")
    torch.export.save(program, tmp)
    os.replace(tmp, path)


def export_policy(path: Path, policy: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """policy.pt2: a batch of raw observations [B, state_dim] -> deterministic actions [B, action_dim]."""
    example = torch.zeros(2, len(mean))
    export_program(path, DeployablePolicy(policy, mean, std), (example,), ({0: torch.export.Dim.DYNAMIC},))


def run_directory(config, algo: str) -> Path:
    path = config.checkpoints_path or os.path.join("runs", algo, config.dataset_id, f"seed{config.seed}")
    return Path(path)


class MujocoWarnings:
    """MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory. From import on they come
    here instead: kept until fit() knows the run directory, then written to its mujoco_warnings.txt."""

    def __init__(self):
        self.messages, self.path = [], None

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        if self.path is not None:
            self.write_to(self.path)

    def write_to(self, path: Path) -> None:
        self.path = path
        with open(path, "a") as f:
            f.writelines(m + "\n" for m in self.messages)
        self.messages = []


MUJOCO_WARNINGS = MujocoWarnings()
try:
    import mujoco

    mujoco.set_mju_user_warning(MUJOCO_WARNINGS)
except ImportError:  # environments without MuJoCo (Pendulum) need no handler
    pass


class RunLog:
    """wandb (offline by default) plus a JSON-lines file beside the checkpoints.  wall_time counts the
    seconds of the whole run: a resumed run starts its clock at the `elapsed` its checkpoint carried."""

    def __init__(self, config, algo: str, run_dir: Path, elapsed: float):
        import wandb

        self.file = open(run_dir / "log.jsonl", "a")
        self.start = time.time() - elapsed
        self.wandb = wandb.init(mode=config.logging, project=config.project, dir=str(run_dir), config=asdict(config),
                                name=f"{algo}-{config.dataset_id}-seed{config.seed}", group=algo,
                                id=f"{algo}-{config.dataset_id}-seed{config.seed}".replace("/", "-"),
                                resume="allow", settings=wandb.Settings(silent=True))

    def write(self, step: int, metrics: dict) -> dict:
        values = {k: float(v) for k, v in metrics.items()}  # the only host sync: at log time
        self.file.write(json.dumps({"step": step, "wall_time": self.elapsed(), **values}) + "\n")
        self.file.flush()
        self.wandb.log(values, step=step)
        return values

    def elapsed(self) -> float:
        return time.time() - self.start

    def close(self) -> None:
        self.file.close()
        self.wandb.finish()


def save_checkpoint(path: Path, step: int, trainer, config, extra: dict, wall_time: float) -> None:
    """What trainer.state_dict() declares, the RNG states, `extra` and the seconds trained so far; written
    to a temporary file then renamed, so an interrupted save never replaces a good checkpoint."""
    state = {"step": step, "trainer": trainer.state_dict(), "config": asdict(config), "extra": extra,
             "wall_time": wall_time,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    if not path.exists():
        fail(f"no checkpoint at {path}.")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated or foreign files
        fail(f"checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}); delete it or pass --resume false.")


def resume(path: Path, trainer, device: torch.device) -> tuple[int, float]:
    """Loads the trainer and the RNG states; returns the update and the seconds trained so far."""
    state = load_checkpoint(path, device)
    try:
        trainer.load_state_dict(state["trainer"])
    except (KeyError, RuntimeError, ValueError, AttributeError, TypeError) as e:
        fail(f"checkpoint {path} does not match this script and config ({type(e).__name__}); "
             f"delete it or pass --resume false.")
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return state["step"], state.get("wall_time", 0.0)  # checkpoints written before 2026-12-02 carry no time


def compile_update(update: Callable) -> Callable:
    """The update as one graph; dynamo must be told to trace Optimizer.step's torch.autograd.grad."""
    import torch._dynamo

    torch._dynamo.config.trace_autograd_ops = True
    return torch.compile(update, fullgraph=True)


class StopRequest:
    """SIGINT (Ctrl-C) or SIGTERM asks the loop to checkpoint after the current update and exit."""

    def __init__(self):
        self.signal = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request)

    def request(self, signum, frame) -> None:
        self.signal = signum


def fit(config, algo: str, trainer, sample: Callable[[], dict], evaluate_policy: Callable[[], dict],
        export: Callable[[Path], None] | None, extra: dict) -> dict:
    """The loop every script shares.  The trainer's contract: update(batch) -> dict of detached tensors,
    state_dict() / load_state_dict() (what a checkpoint holds), an attribute `device`, and optionally
    periodic(step), called before the update of every step for periodic work (refreshing returns,
    model rollouts).  Every eval_every updates: evaluate, log, checkpoint, and export(run_dir / "policy.pt2")
    (None: a script without a policy to deploy).
    stop_after or a signal ends the call early with a checkpoint that the same command resumes.  A
    finished run writes finished.json (its last evaluation); returns the last evaluation."""
    run_dir = run_directory(config, algo)
    run_dir.mkdir(parents=True, exist_ok=True)
    MUJOCO_WARNINGS.write_to(run_dir / "mujoco_warnings.txt")
    checkpoint = run_dir / "checkpoint.pt"
    start, elapsed = resume(checkpoint, trainer, trainer.device) if config.resume and checkpoint.exists() else (0, 0.0)
    if start >= config.max_steps:
        print(f"{run_dir}: already trained for {start} updates (max_steps {config.max_steps}); nothing to do.")
        return {}
    update = compile_update(trainer.update) if config.compile else trainer.update
    periodic = getattr(trainer, "periodic", None)
    log = RunLog(config, algo, run_dir, elapsed)
    log_every = max(1, min(1000, config.eval_every))
    last = min(config.max_steps, start + config.stop_after) if config.stop_after else config.max_steps
    stop = StopRequest()
    result = {}
    for step in trange(start + 1, last + 1, desc=f"{algo} {config.dataset_id}", mininterval=5):
        if periodic is not None:
            periodic(step)
        metrics = update(sample())
        evaluation = step % config.eval_every == 0 or step == config.max_steps
        if step % log_every == 0 or evaluation:
            values = {f"train/{k}": v for k, v in metrics.items()}
            if evaluation:
                measured = evaluate_policy()
                values.update({f"eval/{k}": v for k, v in measured.items() if k != "episodes"})
            values = log.write(step, values)
            if not all(math.isfinite(v) for k, v in values.items() if k.startswith("train/")):
                log.close()
                fail(f"a loss became NaN or infinite at update {step}; the last good checkpoint is kept in {run_dir}.")
            if evaluation:
                save_checkpoint(checkpoint, step, trainer, config, extra, log.elapsed())
                if export is not None:
                    export(run_dir / "policy.pt2")
                result = {k: v for k, v in values.items() if k.startswith("eval/")}
                print(f"step {step}: " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in result.items()), flush=True)
        if stop.signal or (step == last < config.max_steps):
            save_checkpoint(checkpoint, step, trainer, config, extra, log.elapsed())
            log.close()
            print(f"stopped at update {step} of {config.max_steps}; the same command resumes from {checkpoint}.")
            if stop.signal:
                raise SystemExit(128 + stop.signal)
            return result
    log.close()
    (run_dir / "finished.json").write_text(json.dumps({"step": config.max_steps, **result}))
    return result
# --- shared: end


if __name__ == "__main__":
    train(parse_config(TrainConfig))
