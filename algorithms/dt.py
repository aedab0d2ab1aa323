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
# that followed them, then asking for a high return at test time.  The model sees R_hat / rtg_scale
# and raw rewards otherwise; the target returns are eval_targets, or the dataset's own (see dataset_targets).

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
import torch.nn.functional as F
from tqdm import trange


@dataclass
class TrainConfig:
    """Common fields (the same in every script), then the method's: Decision Transformer, with the
    OpenAI Gym hyperparameters of Chen et al. 2021 (appendix).  Here batch_size counts windows
    (trajectory segments of context_len steps), not transitions."""
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    max_steps: int = 100_000  # gradient updates
    batch_size: int = 64  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints, and policy.pt)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    stop_after: int = 0  # updates this call may run before it checkpoints and exits (0: no limit); rerun to resume
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # capture the update with torch.compile(fullgraph=True)
    context_len: int = 20  # K, timesteps per window (3K tokens)
    embed_dim: int = 128  # width of the token embeddings and of the transformer
    n_layers: int = 3  # transformer blocks
    n_heads: int = 1  # attention heads
    dropout: float = 0.1  # dropout of the embeddings, attention weights and residual branches
    learning_rate: float = 1e-4  # AdamW learning rate of theta
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay, on every parameter
    warmup_steps: int = 10_000  # linear learning-rate warmup from 0 (the authors' Gym code)
    grad_clip: float = 0.25  # max global gradient norm
    rtg_scale: float = 1000.0  # the model sees R_hat / rtg_scale (the authors' `scale`)
    max_ep_len: int = 1000  # T_max, rows of the learned timestep embedding (episode steps)
    timestep_embedding_std: float = 0.02  # std of the timestep embedding's initial rows (GPT-2's; the authors': 1.0)
    # R_hat_1 of the evaluation episodes, one evaluation per target; empty: derived from the dataset's
    # episode returns (its best, and the midpoint of its best and worst).  D4RL-scale Hopper: [3600, 1800].
    eval_targets: list[float] = dataclasses.field(default_factory=list)


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """R_hat_t = sum_{t'=t}^T r_{t'} within each trajectory of the flat arrays, as a difference of
    one cumulative sum (float64, so that long trajectories do not lose precision)."""
    total = np.cumsum(rewards, dtype=np.float64)
    ends = np.flatnonzero(episode_ends)
    last = ends[np.searchsorted(ends, np.arange(len(rewards)))]
    return (total[last] - total + rewards).astype(np.float32)


def action_loss(predicted: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L = (1/(|valid| A)) sum_{t valid} || a_hat_t - a_t ||^2: MSE over the non-padded steps only."""
    squared = torch.where(mask[..., None], (predicted - actions).pow(2), 0.0)
    return squared.sum() / (mask.sum() * actions.shape[-1])


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

    def __init__(self, state_dim: int, action_dim: int, max_action: float, embed_dim: int, n_layers: int,
                 n_heads: int, dropout: float, max_ep_len: int, timestep_embedding_std: float):
        super().__init__()
        d = embed_dim
        self.embed_return = nn.Linear(1, d)
        self.embed_state = nn.Linear(state_dim, d)
        self.embed_action = nn.Linear(action_dim, d)
        # The chapter's sketch embeds the position in the window (max_length = K); the paper embeds
        # the episode timestep t, so that the same step has the same code in every window.
        self.embed_timestep = nn.Embedding(max_ep_len, d)
        self.embed_ln = nn.LayerNorm(d)
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, n_heads, dropout) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d)
        self.predict_action = nn.Linear(d, action_dim)
        for module in self.blocks.modules():  # GPT-2 initialization of the transformer's weights
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # The timestep embedding stands in for GPT-2's position embedding, so it starts as GPT-2's (std 0.02).
        # The authors' code keeps nn.Embedding's N(0, 1): rows of timesteps that few trajectories reach stay
        # large random codes, which cost dt most of its score on Hopper medium-replay at our budget (results/
        # peer.md: dt against dt_init1, which is --timestep_embedding_std 1.0).  Scaling the draw keeps the seed.
        with torch.no_grad():
            self.embed_timestep.weight.mul_(timestep_embedding_std)
        self.max_action = max_action

    def forward(self, returns_to_go: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """R_hat [B, K, 1], s [B, K, S], a [B, K, A], t [B, K], mask [B, K] -> a_hat [B, K, A]."""
        B, K = mask.shape
        tokens = torch.stack([self.embed_return(returns_to_go), self.embed_state(states),
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


class ContextPolicy(nn.Module):
    """trainer.policy(): a context of K steps -> a_hat of its last step [B, A].  The context is
    R_hat / rtg_scale [B, K, 1], normalized s [B, K, S], a [B, K, A] (the last is not known yet: any
    value, s_K cannot see it), t [B, K] (int64) and mask [B, K] (bool, False on the left padding)."""

    def __init__(self, model: DecisionTransformer):
        super().__init__()
        self.model = model

    def forward(self, returns_to_go: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(returns_to_go, states, actions, timesteps, mask)[:, -1]


class DTTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        if config.embed_dim % config.n_heads:
            fail(f"embed_dim {config.embed_dim} is not divisible by n_heads {config.n_heads}.")
        self.device = device
        self.model = DecisionTransformer(state_dim, action_dim, max_action, config.embed_dim, config.n_layers,
                                         config.n_heads, config.dropout, config.max_ep_len,
                                         config.timestep_embedding_std).to(device)
        # One AdamW over every parameter, biases and LayerNorms included, with a linear warmup and a
        # clipped gradient norm, as the authors' Gym code (gym/experiment.py, training/seq_trainer.py);
        # their Atari code (minGPT's configure_optimizers) exempts biases and LayerNorms from the decay.
        warmup_steps = config.warmup_steps
        self.optimizer = Optimizer(self.model.parameters(), config.learning_rate, weight_decay=config.weight_decay,
                                   max_grad_norm=config.grad_clip,
                                   schedule=lambda t: ((t + 1) / warmup_steps).clamp(max=1.0))

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        predicted = self.model(batch["returns_to_go"], batch["states"], batch["actions"], batch["timesteps"],
                               batch["mask"])
        loss = action_loss(predicted, batch["actions"], batch["mask"])
        grad_norm = self.optimizer.step(loss)
        return {"action_loss": loss.detach(), "grad_norm": grad_norm}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)

    def policy(self) -> nn.Module:
        """Contexts -> a_hat of their last step: what evaluation runs and policy.pt2 exports."""
        return ContextPolicy(self.model)


def train(config: TrainConfig) -> dict:
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    mean, std = state_statistics(data["observations"], config.normalize_states)
    buffer = SequenceBuffer(data, mean, std, config, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = DTTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    policy = trainer.policy()
    targets = config.eval_targets or dataset_targets(data)
    return fit(config, "dt", trainer, lambda: buffer.sample(config.batch_size),
               make_dt_evaluator(config, dataset, policy, mean, std, targets, device),
               lambda path: export_dt_policy(path, policy, mean, std, config, action_dim),
               {"state_mean": mean, "state_std": std})


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
        rtg = returns_to_go(data["rewards"], data["episode_ends"])[:, None] / config.rtg_scale
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


class DeployableContextPolicy(nn.Module):
    """The context in the environment's units -> a_hat of its last step: R_hat [B, K, 1] (not scaled),
    raw states [B, K, S], actions [B, K, A], episode timesteps t [B, K] (int64, clipped to the
    embedding's T_max - 1) and mask [B, K] (bool); R_hat's scale and the state normalization inside."""

    def __init__(self, policy: nn.Module, mean: np.ndarray, std: np.ndarray, rtg_scale: float, max_ep_len: int):
        super().__init__()
        self.policy = policy
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.rtg_scale, self.max_ep_len = rtg_scale, max_ep_len

    def forward(self, returns_to_go: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.policy(returns_to_go / self.rtg_scale, (states - self.mean) / self.std, actions,
                           timesteps.clamp(max=self.max_ep_len - 1), mask)


def export_dt_policy(path: Path, policy: nn.Module, mean: np.ndarray, std: np.ndarray, config: TrainConfig,
                     action_dim: int) -> None:
    """policy.pt2: a batch of contexts of K = context_len steps in the environment's units ->
    deterministic actions [B, action_dim] (DeployableContextPolicy's inputs; the batch size is free)."""
    module = DeployableContextPolicy(copy.deepcopy(policy).cpu().eval(), mean, std, config.rtg_scale,
                                     config.max_ep_len)
    K = config.context_len
    example = (torch.zeros(2, K, 1), torch.zeros(2, K, len(mean)), torch.zeros(2, K, action_dim),
               torch.zeros(2, K, dtype=torch.long), torch.ones(2, K, dtype=torch.bool))
    batch = torch.export.Dim("batch")
    export_program(path, module, example, tuple({0: batch} for _ in example))


@torch.no_grad()
def rollout(act: Callable, env: gym.Env, target: float, context_len: int, device: torch.device,
            seed: int) -> tuple[float, float]:
    """One episode conditioned on R_hat_1 = target, with the context bookkeeping policy.pt2 needs:
    act (a DeployableContextPolicy) sees the last K steps in the environment's units, left-padded,
    with a_t = 0 while a_t is predicted, and after each step R_hat_{t+1} = R_hat_t - r_t.  Returns
    the return and the return discounted by EVAL_DISCOUNT."""
    K = context_len
    states = torch.zeros(1, K, env.observation_space.shape[0], device=device)
    actions = torch.zeros(1, K, env.action_space.shape[0], device=device)
    rtg = torch.zeros(1, K, 1, device=device)
    timesteps = torch.zeros(1, K, dtype=torch.long, device=device)
    mask = torch.zeros(1, K, dtype=torch.bool, device=device)
    obs, _ = env.reset(seed=seed)
    to_go, t, total, discounted, discount, done = target, 0, 0.0, 0.0, 1.0, False
    while not done:
        for window in (states, actions, rtg, timesteps, mask):  # drop the oldest step, step t goes last
            window.copy_(window.roll(-1, dims=1))
        states[0, -1] = torch.as_tensor(obs, dtype=torch.float32, device=device)
        actions[0, -1] = 0.0
        rtg[0, -1] = to_go
        timesteps[0, -1] = t
        mask[0, -1] = True
        actions[0, -1] = act(rtg, states, actions, timesteps, mask)[0]
        obs, reward, terminated, truncated, _ = env.step(actions[0, -1].cpu().numpy())
        reward, done = float(reward), terminated or truncated
        total, discounted, discount = total + reward, discounted + discount * reward, discount * EVAL_DISCOUNT
        to_go, t = to_go - reward, t + 1
    return total, discounted


def dataset_targets(data: dict[str, np.ndarray]) -> list[float]:
    """R_hat_1 targets within the dataset's reach: its best episode return (the chapter's example
    target) and the midpoint of its best and worst, which is about half the best when the worst is
    near 0, as the paper's Hopper pair 3600 / 1800 is for D4RL's data (Chen et al. 2021, Gym code)."""
    returns = data["episode_returns"][data["episode_ends"] > 0]
    return [float(returns.max()), float(returns.max() + returns.min()) / 2]


def make_dt_evaluator(config: TrainConfig, dataset, policy: nn.Module, mean: np.ndarray, std: np.ndarray,
                      targets: list[float], device: torch.device) -> Callable[[], dict]:
    """The same seeded episodes for each target R_hat_1: return_<target> and normalized_score_<target>;
    return, discounted_return and normalized_score are those of the first target."""
    env = dataset.recover_environment(eval_env=True)
    act = DeployableContextPolicy(policy, mean, std, config.rtg_scale, config.max_ep_len).to(device)

    def episodes(target: float) -> np.ndarray:
        """[2, eval_episodes]: the returns, then the discounted returns, of the seeded episodes."""
        return np.asarray([rollout(act, env, target, config.context_len, device, seed=config.seed + 10_000 + ep)
                           for ep in range(config.eval_episodes)]).T

    def run() -> dict:
        act.eval()  # no dropout while acting
        measured = {target: episodes(target) for target in targets}
        act.train()
        metrics = {}
        for target, (returns, _) in measured.items():
            metrics[f"return_{target:g}"] = returns.mean()
            metrics[f"normalized_score_{target:g}"] = normalized_score(dataset, returns)
        returns, discounted = measured[targets[0]]
        return {"return": returns.mean(), "discounted_return": discounted.mean(),
                "normalized_score": normalized_score(dataset, returns), **metrics}

    return run


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
