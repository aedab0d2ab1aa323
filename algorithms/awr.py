# AWR: Advantage-Weighted Regression (Peng, Kumar, Zhang, Levine 2019, "Advantage-Weighted Regression:
# Simple and Scalable Off-Policy Reinforcement Learning"), on a fixed dataset as in its section 5.3.
# Chapter: the RL03 overview's "Implicit Policy Constraint" (pi*(a|s) proportional to pi_beta(a|s) exp(A(s, a) / beta),
# fitted by advantage-weighted maximum likelihood), the offline RL note's item 4 (AWR: fit V of pi_beta, weight
# the imitation by its advantage) and 21.5.2-21.5.3 (IQL's policy step is the same exp(A / beta) weighting).
#
#   R^lambda_t = r_t + gamma (1 - d_t) [ (1 - lambda) V_psi(s_{t+1}) + lambda R^lambda_{t+1} ]      (TD(lambda) return)
#                with R^lambda_{t+1} := V_psi(s_T) after the last step of a truncated episode (and d_t = 1,
#                no bootstrap, after a terminal one); lambda = 1 is the Monte Carlo return
#   L_V(psi)   = E_{s_t~D} [ ( R^lambda_t - V_psi(s_t) )^2 ]
#   L_pi(phi)  = -E_{(s_t,a_t)~D} [ min( exp( A_t / beta ), omega_max ) log pi_phi(a_t|s_t) ],  A_t = R^lambda_t - V_psi(s_t)
#
# No Q-function: the advantage is the dataset's own (lambda-)return minus a state-value baseline of the
# behavior policy.  That is what separates AWR from AWAC and IQL, which both learn Q_theta(s, a).  As in
# the paper's loop, R^lambda and A are recomputed over whole trajectories with the current V_psi every
# `returns_every` updates, then V_psi and pi_phi are fitted to them by SGD.

import dataclasses
import json
import math
import os
import random
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
import torch.nn.functional as F
from tqdm import trange


@dataclass
class TrainConfig:
    """Common fields (the same in every script), then the method's.

    AWR (defaults: Peng et al. 2019, appendix, and the authors' MuJoCo configuration)
    """
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    normalize_reward: bool = False  # scale rewards by 1000 / (max return - min return), as IQL does
    max_steps: int = 1_000_000  # gradient updates
    batch_size: int = 256  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # capture the update with torch.compile
    beta: float = 1.0  # beta, temperature of the weights exp(A / beta)
    max_weight: float = 20.0  # omega_max, clip of exp(A / beta)
    normalize_advantages: bool = True  # standardize A over the dataset before exp(A / beta), as the authors' code does
    td_lambda: float = 0.95  # lambda of the TD(lambda) returns R^lambda
    gamma: float = 0.99  # gamma, discount
    returns_every: int = 200  # updates between recomputations of R^lambda and A with the current V_psi (the paper: 200 V steps an iteration)
    action_std: float = 0.4  # standard deviation of pi_phi(a|s), fixed, in units of max_action
    hidden_dim: int = 128  # hidden widths of V_psi and pi_phi: hidden_dim, then hidden_dim // 2 (128-64 in the paper)
    value_lr: float = 1e-2  # SGD learning rate of V_psi
    actor_lr: float = 1e-4  # SGD learning rate of pi_phi (the paper's Hopper value; 5e-5 for HalfCheetah)
    momentum: float = 0.9  # momentum of both SGD optimizers


# --- shared: begin
# Identical in every script of algorithms/ (tests/test_shared_block.py checks it): seeding,
# Minari loading, flattening, normalization, the device-resident buffer, evaluation, logging,
# network building blocks, checkpoints and the training loop.  Edit it in one script, then run tools/sync_shared.py.


def fail(message: str) -> None:
    """Bad input ends the run with one sentence and a non-zero exit status, not a stack trace."""
    raise SystemExit(f"error: {message}")


def check_config_file(config_class) -> None:
    """A YAML key that is not a field of TrainConfig is one sentence (pyrallis would raise)."""
    import yaml

    argv = sys.argv[1:]
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config_path=")]
    paths += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config_path"]
    fields = {f.name for f in dataclasses.fields(config_class)}
    for path in paths:
        if not os.path.isfile(path):
            fail(f"config file {path} does not exist.")
        with open(path) as f:
            keys = set(yaml.safe_load(f) or {})
        if keys - fields:
            fail(f"config {path} has unknown key(s) {', '.join(sorted(keys - fields))}; "
                 f"valid keys: {', '.join(sorted(fields))}.")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def reward_scale(data: dict[str, np.ndarray], enabled: bool) -> float:
    """1000 / (max return - min return) over trajectories (Kostrikov et al. 2022, appendix B)."""
    if not enabled:
        return 1.0
    returns = data["episode_returns"][data["episode_ends"] > 0]
    return 1000.0 / max(float(returns.max() - returns.min()), 1e-6)


def transition_buffer(data: dict[str, np.ndarray], config, device: torch.device):
    """DeviceBuffer of (s, a, r, s', done) with normalized states and scaled rewards, and the
    state statistics (mean, std) that the policy needs at evaluation time."""
    mean, std = state_statistics(data["observations"], config.normalize_states)
    transitions = {
        "observations": (data["observations"] - mean) / std,
        "actions": data["actions"],
        "rewards": data["rewards"] * reward_scale(data, config.normalize_reward),
        "next_observations": (data["next_observations"] - mean) / std,
        "terminals": data["terminals"],
    }
    return DeviceBuffer(transitions, device), mean, std


class DeviceBuffer:
    """The whole dataset as tensors on the training device; batch indices are drawn there too."""

    def __init__(self, data: dict[str, np.ndarray], device: torch.device):
        self.data = {k: torch.as_tensor(np.asarray(v, np.float32), device=device) for k, v in data.items()}
        self.size = len(next(iter(self.data.values())))
        self.device = device

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


def evaluate(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of the deterministic policy `act`, one seeded episode after another."""
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return np.asarray(returns)


def normalized_score(dataset, returns: np.ndarray) -> float:
    """D4RL score: 100 * (return - random) / (expert - random); NaN when the dataset has no references."""
    import minari

    try:
        return float(100 * np.mean(minari.get_normalized_score(dataset, returns)))
    except Exception:  # noqa: BLE001 - datasets without ref_min_score / ref_max_score
        return math.nan


def make_evaluator(config, dataset, policy: Callable[[torch.Tensor], torch.Tensor], mean: np.ndarray,
                   std: np.ndarray, device: torch.device) -> Callable[[], dict]:
    """Evaluation of a deterministic policy of normalized states in the dataset's eval env."""
    env = dataset.recover_environment(eval_env=True)
    mean_t, std_t = torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        state = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean_t) / std_t
        return policy(state[None])[0].cpu().numpy()

    def run() -> dict:
        returns = evaluate(env, act, config.eval_episodes, seed=config.seed + 10_000)
        return {"return": returns.mean(), "normalized_score": normalized_score(dataset, returns)}

    return run


class VectorizedLinear(nn.Module):
    """n independent linear layers applied in one batched matmul: x [n, B, in] -> [n, B, out]."""

    def __init__(self, in_features: int, out_features: int, n: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # the same initialization as nn.Linear
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int = 2) -> nn.Sequential:
    layers, dim = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU()]
        dim = hidden_dim
    return nn.Sequential(*layers, nn.Linear(dim, out_dim))


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


def run_directory(config, algo: str) -> Path:
    path = config.checkpoints_path or os.path.join("runs", algo, config.dataset_id, f"seed{config.seed}")
    return Path(path)


class RunLog:
    """wandb (offline by default) plus a JSON-lines file beside the checkpoints."""

    def __init__(self, config, algo: str, run_dir: Path):
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(run_dir / "log.jsonl", "a")
        self.start = time.time()
        self.wandb = wandb.init(mode=config.logging, project=config.project, dir=str(run_dir), config=asdict(config),
                                name=f"{algo}-{config.dataset_id}-seed{config.seed}", group=algo,
                                id=f"{algo}-{config.dataset_id}-seed{config.seed}".replace("/", "-"),
                                resume="allow", settings=wandb.Settings(silent=True))

    def write(self, step: int, metrics: dict) -> dict:
        values = {k: float(v) for k, v in metrics.items()}  # the only host sync: at log time
        self.file.write(json.dumps({"step": step, "wall_time": time.time() - self.start, **values}) + "\n")
        self.file.flush()
        self.wandb.log(values, step=step)
        return values

    def close(self) -> None:
        self.file.close()
        self.wandb.finish()


def training_state(trainer) -> dict:
    """Every module, optimizer, learning-rate schedule and tensor attribute of the trainer, by name."""
    return {name: (obj.detach().clone() if isinstance(obj, torch.Tensor) else obj.state_dict())
            for name, obj in vars(trainer).items()
            if isinstance(obj, (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.Tensor))}


def restore_training_state(trainer, state: dict) -> None:
    for name, value in state.items():
        obj = getattr(trainer, name)
        if isinstance(obj, torch.Tensor):
            obj.data.copy_(value)
        else:
            obj.load_state_dict(value)


def save_checkpoint(path: Path, step: int, trainer, config, extra: dict) -> None:
    """Written to a temporary file then renamed: an interrupted save never replaces a good checkpoint."""
    state = {"step": step, "trainer": training_state(trainer), "config": asdict(config), "extra": extra,
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


def resume(path: Path, trainer, device: torch.device) -> int:
    state = load_checkpoint(path, device)
    try:
        restore_training_state(trainer, state["trainer"])
    except (KeyError, RuntimeError, ValueError, AttributeError) as e:
        fail(f"checkpoint {path} does not match this script and config ({type(e).__name__}); "
             f"delete it or pass --resume false.")
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return state["step"]


def fit(config, algo: str, trainer, sample: Callable[[], dict], evaluate_policy: Callable[[], dict],
        extra: dict) -> dict:
    """The loop every script shares: update, log, evaluate, checkpoint, resume.  Returns the last
    evaluation.  `extra` (normalizer statistics and the like) is stored with each checkpoint."""
    run_dir = run_directory(config, algo)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "checkpoint.pt"
    start = resume(checkpoint, trainer, trainer.device) if config.resume and checkpoint.exists() else 0
    if start >= config.max_steps:
        print(f"{run_dir}: already trained for {start} updates (max_steps {config.max_steps}); nothing to do.")
        return {}
    update = torch.compile(trainer.update) if config.compile else trainer.update
    log = RunLog(config, algo, run_dir)
    log_every = max(1, min(1000, config.eval_every))
    result = {}
    for step in trange(start + 1, config.max_steps + 1, desc=f"{algo} {config.dataset_id}", mininterval=5):
        metrics = update(sample())
        if step % log_every == 0 or step % config.eval_every == 0 or step == config.max_steps:
            values = {f"train/{k}": v for k, v in metrics.items()}
            if step % config.eval_every == 0 or step == config.max_steps:
                values.update({f"eval/{k}": v for k, v in evaluate_policy().items()})
            values = log.write(step, values)
            if not all(math.isfinite(v) for k, v in values.items() if k.startswith("train/")):
                log.close()
                fail(f"a loss became NaN or infinite at update {step}; the last good checkpoint is kept in {run_dir}.")
            if step % config.eval_every == 0 or step == config.max_steps:
                save_checkpoint(checkpoint, step, trainer, config, extra)
                result = {k: v for k, v in values.items() if k.startswith("eval/")}
                print(f"step {step}: " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in result.items()), flush=True)
    log.close()
    return result
# --- shared: end


def awr_mlp(in_dim: int, out_dim: int, hidden_dim: int) -> nn.Sequential:
    """The paper's networks: two ReLU layers of hidden_dim and hidden_dim // 2 units (128-64)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim // 2), nn.ReLU(),
                         nn.Linear(hidden_dim // 2, out_dim))


class ValueFunction(nn.Module):
    """V_psi(s) = net(s) / (1 - gamma): the network regresses (1 - gamma) V, a reward-per-step scale, as the
    authors' value normalizer does, so that the SGD step size does not depend on the horizon."""

    def __init__(self, state_dim: int, hidden_dim: int, gamma: float):
        super().__init__()
        self.net = awr_mlp(state_dim, 1, hidden_dim)
        self.gamma = gamma

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state).squeeze(-1) / (1.0 - self.gamma)


class GaussianPolicy(nn.Module):
    """pi_phi(a|s) = N(max_action * tanh(mu(s)), (action_std * max_action)^2 I), a fixed covariance as in the
    paper; the mean is the deterministic action.  (The authors keep the mean in bounds with a penalty; tanh does.)"""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float, action_std: float):
        super().__init__()
        self.net = awr_mlp(state_dim, action_dim, hidden_dim)
        self.max_action = max_action
        self.std = action_std * max_action

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(state))

    def log_prob(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(self(state), self.std).log_prob(action).sum(-1)


def lambda_returns(rewards: torch.Tensor, next_values: torch.Tensor, terminals: torch.Tensor,
                   episode_ends: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """R^lambda_t = r_t + gamma (1 - d_t) [ (1 - lambda) V(s_{t+1}) + lambda R^lambda_{t+1} ] for flat transitions,
    episodes one after the other (flatten_episodes' layout), next_values = V(s_{t+1}).  After an episode's last
    step R^lambda_{t+1} := V(s_{t+1}): a truncated episode bootstraps from its last next state, a terminal one
    has d_t = 1.  The episodes become the columns of a [time, episode] grid and the recursion runs backward over
    time for all of them at once."""
    ends = episode_ends > 0
    position = torch.arange(len(rewards), device=rewards.device)
    episode = torch.cumsum(ends.long(), 0) - ends.long()
    starts = torch.cat([position[:1], position[ends][:-1] + 1])
    time = position - starts[episode]
    n_steps, n_episodes = int(time.max()) + 1, len(starts)

    def grid(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(n_steps, n_episodes, dtype=x.dtype, device=x.device)
        out[time, episode] = x
        return out

    r, v, d, end = grid(rewards), grid(next_values), grid(terminals), grid(ends)
    returns = torch.zeros_like(r)
    following = torch.zeros_like(r[0])  # R^lambda_{t+1}; zeros in the padding past an episode's end are never read
    for t in reversed(range(n_steps)):
        following = torch.where(end[t], v[t], following)
        following = r[t] + gamma * (1.0 - d[t]) * ((1.0 - lam) * v[t] + lam * following)
        returns[t] = following
    return returns[time, episode]


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float, normalize: bool) -> torch.Tensor:
    """w = min(exp(A / beta), omega_max); A standardized first over all the transitions it is given."""
    if normalize:
        advantage = (advantage - advantage.mean()) / (advantage.std(correction=0) + 1e-5)
    return torch.exp(advantage / beta).clamp(max=max_weight)


def value_loss(value: ValueFunction, states: torch.Tensor, returns: torch.Tensor, gamma: float) -> torch.Tensor:
    """L_V(psi) = E ( R^lambda - V_psi(s) )^2, on the network's scale (1 - gamma) V and halved, as the authors."""
    return 0.5 * ((1.0 - gamma) * (returns - value(states))).pow(2).mean()


def policy_loss(policy: GaussianPolicy, batch: dict, weights: torch.Tensor) -> torch.Tensor:
    """L_pi(phi) = -E_{(s,a)~D} [ w(s, a) log pi_phi(a|s) ]."""
    return -(weights * policy.log_prob(batch["observations"], batch["actions"])).mean()


class AWRTrainer:
    """Besides the networks, holds R^lambda and the weight w of every transition of `buffer`: tensors of the
    trainer, so that a resumed run continues with the targets it had, and entries of the buffer, so that
    batches carry them."""

    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device,
                 buffer: DeviceBuffer, episode_ends: torch.Tensor):
        self.device = device
        self.value = ValueFunction(state_dim, config.hidden_dim, config.gamma).to(device)
        self.actor = GaussianPolicy(state_dim, action_dim, config.hidden_dim, max_action, config.action_std).to(device)
        self.value_optimizer = torch.optim.SGD(self.value.parameters(), lr=config.value_lr, momentum=config.momentum)
        self.actor_optimizer = torch.optim.SGD(self.actor.parameters(), lr=config.actor_lr, momentum=config.momentum)
        self.trajectories = {**buffer.data, "episode_ends": episode_ends}  # a dict: read, never checkpointed
        self.returns = torch.zeros(buffer.size, device=device)
        self.weights = torch.ones(buffer.size, device=device)
        buffer.data.update(returns=self.returns, weights=self.weights)
        self.buffer = buffer
        self.batches = torch.zeros((), dtype=torch.long)  # a CPU tensor: checkpointed, read without a device sync
        self.config = config

    @torch.no_grad()
    def refresh_targets(self) -> None:
        """R^lambda with the current V_psi over whole trajectories, then A = R^lambda - V_psi(s) and the weights.
        The paper refits V before computing A; here A uses the V that produced R^lambda."""
        c, data = self.config, self.trajectories
        values = torch.cat([self.value(s) for s in data["observations"].split(65536)])
        next_values = torch.cat([self.value(s) for s in data["next_observations"].split(65536)])
        returns = lambda_returns(data["rewards"], next_values, data["terminals"], data["episode_ends"], c.gamma,
                                 c.td_lambda)
        self.returns.copy_(returns)
        self.weights.copy_(awr_weights(returns - values, c.beta, c.max_weight, c.normalize_advantages))

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        """A batch with its R^lambda and w, refreshed every returns_every batches (outside update: no sync there)."""
        if int(self.batches) % self.config.returns_every == 0:
            self.refresh_targets()
        self.batches += 1
        return self.buffer.sample(batch_size)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v_loss = value_loss(self.value, batch["observations"], batch["returns"], self.config.gamma)
        self.value_optimizer.zero_grad(set_to_none=True)
        v_loss.backward()
        self.value_optimizer.step()

        actor_loss = policy_loss(self.actor, batch, batch["weights"])
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        return {"value_loss": v_loss.detach(), "actor_loss": actor_loss.detach(), "return": batch["returns"].mean(),
                "weight": batch["weights"].mean()}

    @torch.no_grad()
    def act(self, state: torch.Tensor) -> torch.Tensor:
        return self.actor(state)


@pyrallis.wrap()
def train(config: TrainConfig) -> dict:
    if config.returns_every < 1:
        fail(f"returns_every must be at least 1, got {config.returns_every}.")
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std = transition_buffer(data, config, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = AWRTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device, buffer,
                         torch.as_tensor(data["episode_ends"], device=device))
    evaluate_policy = make_evaluator(config, dataset, trainer.act, mean, std, device)
    return fit(config, "awr", trainer, lambda: trainer.sample(config.batch_size), evaluate_policy,
               {"state_mean": mean, "state_std": std})


if __name__ == "__main__":
    check_config_file(TrainConfig)
    train()
