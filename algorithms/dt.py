# Decision Transformer (Chen, Lu, Rajeswaran, Lee, Grover, Laskin, Abbeel, Srinivas, Mordatch 2021,
# "Decision Transformer: Reinforcement Learning via Sequence Modeling").  Chapter: 21.6 "Decision
# Transformer" and the robotics document's "Decision Transformer" section.
#
#   return-to-go:  R_hat_t = sum_{t'=t}^T r_{t'}                       (undiscounted, to the end of the trajectory)
#   sequence:      tau = (R_hat_1, s_1, a_1, R_hat_2, s_2, a_2, ..., R_hat_K, s_K, a_K), the last K timesteps
#   policy:        a_hat_t = GPT(R_hat_{<=t}, s_{<=t}, a_{<t}), read at the s_t token (causal self-attention)
#   loss:          L(theta) = E_{tau~D} [ (1/|valid|) sum_{t valid} || a_hat_t - a_t ||^2 ]   (padded steps excluded)
#   test time:     R_hat_1 = target return,  R_hat_{t+1} = R_hat_t - r_t
#
# No value function, no Bellman backup: supervised learning of actions conditioned on the return
# that followed them, then asking for a high return at test time.

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

    Decision Transformer (Chen et al. 2021, appendix: OpenAI Gym hyperparameters)
    """
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    normalize_reward: bool = False  # scale rewards by 1000 / (max return - min return), as IQL does
    max_steps: int = 100_000  # gradient updates
    batch_size: int = 64  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # capture the update with torch.compile
    context_len: int = 20  # K, timesteps per input window (3K tokens)
    embed_dim: int = 128  # width of the token embeddings and of the transformer
    n_layers: int = 3  # transformer blocks
    n_heads: int = 1  # attention heads
    dropout: float = 0.1  # dropout of the embeddings, attention weights and residual branches
    learning_rate: float = 1e-4  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 10_000  # linear learning-rate warmup from 0 (the authors' Gym code)
    grad_clip: float = 0.25  # max global gradient norm
    rtg_scale: float = 1000.0  # R_hat is divided by this before its embedding (normalize_reward is not used)
    max_ep_len: int = 1000  # T_max, rows of the learned timestep embedding (episode steps)
    eval_targets: list[float] = dataclasses.field(default_factory=lambda: [3600.0, 1800.0])  # R_hat_1 targets (Hopper)


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


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """R_hat_t = sum_{t'=t}^T r_{t'} within each trajectory of the flat arrays, as a difference of
    one cumulative sum (float64, so that long trajectories do not lose precision)."""
    total = np.cumsum(rewards, dtype=np.float64)
    ends = np.flatnonzero(episode_ends)
    last = ends[np.searchsorted(ends, np.arange(len(rewards)))]
    return (total[last] - total + rewards).astype(np.float32)


def left_padded(values: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values[index] with the padded positions (mask False) set to zero."""
    keep = mask.reshape(*mask.shape, *[1] * (values.dim() - 1))
    return torch.where(keep, values[index], 0)


class SequenceBuffer:
    """Whole trajectories as flat tensors on the device, sampled as windows of K steps with left
    padding: row j of a window starting at flat index i holds step i + j - (K - n), where
    n = min(K, steps from i to the end of its trajectory), and rows j < K - n are padding."""

    def __init__(self, data: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, config: TrainConfig,
                 device: torch.device):
        ends = np.flatnonzero(data["episode_ends"])
        steps = np.arange(len(data["rewards"]))
        episode = np.searchsorted(ends, steps)
        timesteps = steps - np.r_[0, ends[:-1] + 1][episode]
        if timesteps.max() >= config.max_ep_len:
            fail(f"the dataset has a trajectory of {timesteps.max() + 1} steps, more than max_ep_len "
                 f"{config.max_ep_len} (the rows of the timestep embedding); pass --max_ep_len {timesteps.max() + 1}.")
        self.states = torch.as_tensor((data["observations"] - mean) / std, dtype=torch.float32, device=device)
        self.actions = torch.as_tensor(data["actions"], dtype=torch.float32, device=device)
        rtg = returns_to_go(data["rewards"], data["episode_ends"]) / config.rtg_scale
        self.returns_to_go = torch.as_tensor(rtg, dtype=torch.float32, device=device)
        self.timesteps = torch.as_tensor(timesteps, dtype=torch.long, device=device)
        self.last = torch.as_tensor(ends[episode], dtype=torch.long, device=device)  # flat index of the last step
        self.size, self.context_len, self.device = len(steps), config.context_len, device

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        # A uniform flat start index is the paper's sampling: a trajectory with probability
        # proportional to its length, then a uniform start step within it.
        return self.windows(torch.randint(0, self.size, (batch_size,), device=self.device))

    def windows(self, start: torch.Tensor) -> dict[str, torch.Tensor]:
        K = self.context_len
        padding = K - (self.last[start] - start + 1).clamp(max=K)
        offset = torch.arange(K, device=start.device)
        mask = offset >= padding[:, None]
        index = torch.where(mask, start[:, None] + offset - padding[:, None], 0)
        return {"returns_to_go": left_padded(self.returns_to_go, index, mask),
                "states": left_padded(self.states, index, mask),
                "actions": left_padded(self.actions, index, mask),
                "timesteps": left_padded(self.timesteps, index, mask),
                "mask": mask}


@torch.no_grad()
def rollout(act: Callable, env: gym.Env, target: float, mean: torch.Tensor, std: torch.Tensor,
            config: TrainConfig, action_dim: int, seed: int) -> float:
    """One episode conditioned on R_hat_1 = target; the model sees the last K steps, and after each
    step R_hat_{t+1} = R_hat_t - r_t.  Returns the undiscounted return."""
    K, device = config.context_len, mean.device
    states = torch.zeros(1, K, len(mean), device=device)
    actions = torch.zeros(1, K, action_dim, device=device)
    rtg = torch.zeros(1, K, device=device)
    timesteps = torch.zeros(1, K, dtype=torch.long, device=device)
    mask = torch.zeros(1, K, dtype=torch.bool, device=device)
    obs, _ = env.reset(seed=seed)
    to_go, total, t, done = target, 0.0, 0, False
    while not done:
        for window in (states, actions, rtg, timesteps, mask):  # drop the oldest step, step t goes last
            window.copy_(window.roll(-1, dims=1))
        states[0, -1] = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean) / std
        actions[0, -1] = 0.0  # a_t is unknown yet; the s_t token that predicts it cannot see it
        rtg[0, -1] = to_go / config.rtg_scale
        timesteps[0, -1] = min(t, config.max_ep_len - 1)
        mask[0, -1] = True
        actions[0, -1] = act(rtg, states, actions, timesteps, mask)[0]
        obs, reward, terminated, truncated, _ = env.step(actions[0, -1].cpu().numpy())
        total, to_go, t = total + float(reward), to_go - float(reward), t + 1
        done = terminated or truncated
    return total


def make_dt_evaluator(config: TrainConfig, dataset, trainer, mean: np.ndarray, std: np.ndarray,
                      action_dim: int) -> Callable[[], dict]:
    """Return and normalized score for each target R_hat_1 in eval_targets (the same seeded
    episodes for every target); "return" and "normalized_score" are those of the first target."""
    env = dataset.recover_environment(eval_env=True)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=trainer.device)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=trainer.device)

    def run() -> dict:
        trainer.model.eval()  # no dropout while acting
        metrics = {}
        for target in config.eval_targets:
            returns = np.asarray([rollout(trainer.act, env, target, mean_t, std_t, config, action_dim,
                                          seed=config.seed + 10_000 + ep) for ep in range(config.eval_episodes)])
            metrics[f"return_{target:g}"] = returns.mean()
            metrics[f"normalized_score_{target:g}"] = normalized_score(dataset, returns)
        trainer.model.train()
        first = f"{config.eval_targets[0]:g}"
        return {"return": metrics[f"return_{first}"], "normalized_score": metrics[f"normalized_score_{first}"],
                **metrics}

    return run


def attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, K] valid steps -> [B, 1, 3K, 3K], True where query token i may attend to key token j:
    j <= i (causal) and j not padding.  Every token also sees itself, so the row of a padded query
    is never empty (a softmax over nothing is NaN), and no valid token ever sees a padded one."""
    valid = mask.repeat_interleave(3, dim=1)  # R_hat_t, s_t and a_t share the mask of step t
    n = valid.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
    itself = torch.eye(n, dtype=torch.bool, device=mask.device)
    return ((causal & valid[:, None, :]) | itself)[:, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.residual_dropout = nn.Dropout(dropout)
        self.n_heads, self.dropout = n_heads, dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.residual_dropout(self.proj(y.transpose(1, 2).reshape(B, T, D)))


class Block(nn.Module):
    """Pre-LN GPT block: x + Attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln_attention = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_attention(x), allowed)
        return x + self.mlp(self.ln_mlp(x))


class DecisionTransformer(nn.Module):
    """Linear embeddings of R_hat, s and a plus a learned embedding of the episode timestep t,
    interleaved as (R_hat_1, s_1, a_1, R_hat_2, ...), a causal GPT, and a_hat_t = max_action *
    tanh(W h(s_t)) read at each state token."""

    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig):
        super().__init__()
        d = config.embed_dim
        self.embed_return = nn.Linear(1, d)
        self.embed_state = nn.Linear(state_dim, d)
        self.embed_action = nn.Linear(action_dim, d)
        # The chapter's sketch embeds the position in the window (max_length = K); the paper embeds
        # the episode timestep t, so that the same step has the same code in every window.
        self.embed_timestep = nn.Embedding(config.max_ep_len, d)
        self.embed_ln = nn.LayerNorm(d)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(d)
        self.predict_action = nn.Linear(d, action_dim)
        for module in self.blocks.modules():  # GPT-2 initialization of the transformer's weights
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.max_action = max_action

    def forward(self, returns_to_go: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """R_hat [B, K], s [B, K, S], a [B, K, A], t [B, K], mask [B, K] -> a_hat [B, K, A]."""
        B, K = mask.shape
        tokens = torch.stack([self.embed_return(returns_to_go[..., None]), self.embed_state(states),
                              self.embed_action(actions)], dim=2)  # [B, K, 3, d]
        tokens = tokens + self.embed_timestep(timesteps)[:, :, None]
        x = self.embed_dropout(self.embed_ln(tokens.reshape(B, 3 * K, -1)))
        # The chapter's sketch runs nn.TransformerEncoder without a mask, so s_t would attend to a_t
        # (its own target) and to the future; the paper's GPT is causal, and so is this one.
        allowed = attention_mask(mask)
        for block in self.blocks:
            x = block(x, allowed)
        state_tokens = self.ln_final(x).reshape(B, K, 3, -1)[:, :, 1]
        return self.max_action * torch.tanh(self.predict_action(state_tokens))


def action_loss(predicted: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L = (1/(|valid| A)) sum_{t valid} || a_hat_t - a_t ||^2: MSE over the non-padded steps only."""
    squared = torch.where(mask[..., None], (predicted - actions).pow(2), 0.0)
    return squared.sum() / (mask.sum() * actions.shape[-1])


class DTTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        if config.embed_dim % config.n_heads:
            fail(f"embed_dim {config.embed_dim} is not divisible by n_heads {config.n_heads}.")
        self.device = device
        self.model = DecisionTransformer(state_dim, action_dim, max_action, config).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / config.warmup_steps, 1.0))
        self.config = config

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        predicted = self.model(batch["returns_to_go"], batch["states"], batch["actions"], batch["timesteps"],
                               batch["mask"])
        loss = action_loss(predicted, batch["actions"], batch["mask"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return {"action_loss": loss.detach(), "grad_norm": grad_norm.detach()}

    @torch.no_grad()
    def act(self, returns_to_go: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, timesteps: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
        """a_hat of the last step of each window."""
        return self.model(returns_to_go, states, actions, timesteps, mask)[:, -1]


@pyrallis.wrap()
def train(config: TrainConfig) -> dict:
    if not config.eval_targets:
        fail("eval_targets is empty; give at least one target return, e.g. --eval_targets '[3600.0]'.")
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    mean, std = state_statistics(data["observations"], config.normalize_states)
    buffer = SequenceBuffer(data, mean, std, config, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = DTTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    evaluate_policy = make_dt_evaluator(config, dataset, trainer, mean, std, action_dim)
    return fit(config, "dt", trainer, lambda: buffer.sample(config.batch_size), evaluate_policy,
               {"state_mean": mean, "state_std": std})


if __name__ == "__main__":
    check_config_file(TrainConfig)
    train()
