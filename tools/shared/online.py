"""Canonical source of the `online` block: the online phase of offline-to-online fine-tuning (the online buffer, the
episode collector, the mixed batch, the online fields' ranges), carried by iql.py, cql.py, td3_bc.py and awac.py
(tools/sync_shared.py lists them).  It uses fail from the appendix and DeviceBuffer and transitions from the
`transitions` block.  Edit here, then run `python -m tools.sync_shared online`."""

from typing import Callable

import gymnasium as gym
import numpy as np
import torch

# --- online: begin
# Offline-to-online fine-tuning (the chapter's "Offline-to-Online Fine-tuning"), the same in iql, cql, td3_bc and awac
# (source: tools/shared/online.py).  After max_steps offline updates come online_steps environment steps with utd
# updates per step, episode by episode as in Cal-QL's code (nakamotoo/Cal-QL, JaxCQL/conservative_sac_main.py: one
# trajectory of the stochastic policy, then len(trajectory) * online_utd_ratio updates).  An episode enters the online
# buffer when it ends, with its returns-to-go; a checkpoint, taken between updates, therefore always falls between
# episodes, and a resume never restarts one midway.  Batches: online_ratio of them from the online buffer, the rest
# from the dataset, each drawn uniformly: the fixed-ratio "symmetric sampling" of RLPD (Ball et al. 2023) that Cal-QL
# fine-tunes with (its scripts pass --mixing_ratio=0.5), not the prioritized balanced replay of Lee et al. 2021.
# warmup_steps > 0 starts the online phase with that many environment steps of uniform random actions and no updates
# (SAC's start_steps, 10k in Haarnoja et al. and tools/behavior_sac.py), for SAC from scratch.
# Evaluations stay every eval_every updates (and at max_steps): eval_every <= online_steps * utd / 15 puts at least
# three of them in the first fifth of the online phase.

ONLINE_SEEDS = 20_000  # online episode i starts from env.reset(seed=seed + ONLINE_SEEDS + i); evaluations: seed + 10_000


def online_ranges(config) -> dict[str, str]:
    """The online fields' ranges, for check_ranges (TrainConfig.__post_init__): with online_steps > 0, max_steps may be
    0 (an online learner from scratch); warmup_steps at most online_steps."""
    return {"online_steps": "0 or more", "online_ratio": "in [0, 1]", "warmup_steps": f"in [0, {config.online_steps}]",
            "max_steps": "0 or more" if config.online_steps > 0 else "at least 1"}


class OnlineBuffer:
    """Room for online_steps transitions with the keys of the dataset's DeviceBuffer, on its device, sampled like it;
    filled episode by episode."""

    def __init__(self, like: "DeviceBuffer", capacity: int):
        self.data = {k: torch.zeros((capacity, *v.shape[1:]), device=like.device) for k, v in like.data.items()}
        self.size, self.device = 0, like.device

    def add(self, episode: dict) -> None:
        n = len(episode["rewards"])
        for k, v in self.data.items():
            v[self.size:self.size + n] = torch.as_tensor(episode[k], device=self.device)
        self.size += n

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


def training_environment(dataset) -> gym.Env:
    try:
        return dataset.recover_environment()
    except Exception as e:  # noqa: BLE001 - a dataset without an environment spec, or one gymnasium cannot make
        fail(f"online_steps needs the environment of dataset {dataset.spec.dataset_id!r}, which cannot be recovered "
             f"({' '.join(str(e).split()) or type(e).__name__}).")


@torch.no_grad()
def collect_episode(env: gym.Env, explore: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor,
                    std: torch.Tensor, seed: int, max_length: int) -> dict[str, np.ndarray]:
    """One episode of `explore` (normalized states -> sampled actions) from env.reset(seed=seed), cut after max_length
    steps (the end of the online budget), in flatten_episodes' columns: terminals from terminations only."""
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals")}
    obs, _ = env.reset(seed=seed)
    for _ in range(max_length):
        state = (torch.as_tensor(obs, dtype=torch.float32, device=mean.device) - mean) / std
        action = explore(state[None])[0].cpu().numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for column, value in zip(columns.values(), (obs, action, reward, next_obs, terminated)):
            column.append(value)
        obs = next_obs
        if terminated or truncated:
            break
    episode = {k: np.asarray(v, np.float32) for k, v in columns.items()}
    episode["episode_ends"] = (np.arange(len(episode["rewards"])) == len(episode["rewards"]) - 1).astype(np.float32)
    return episode


class FineTuning:
    """What fit() drives when online_steps > 0 (train() builds it only then), around the method's trainer (whose
    update it runs unchanged): periodic(step) collects the next episode once the online updates have used up the
    collected steps, sample() draws the mixed batch, counters() gives env_steps, and the checkpoint adds the online
    episodes.  The console gets a line at the switch and the online phase's own progress, in environment steps (a
    line at every tenth of online_steps); fit's evaluation lines carry env_steps."""

    def __init__(self, config, dataset, trainer, buffer: "DeviceBuffer",
                 explore: Callable[[torch.Tensor], torch.Tensor], mean: np.ndarray, std: np.ndarray, scale: float):
        self.trainer, self.update, self.device = trainer, trainer.update, trainer.device
        self.buffer, self.online_buffer = buffer, OnlineBuffer(buffer, config.online_steps)
        self.offline_steps, self.online_steps, self.utd = config.max_steps, config.online_steps, config.utd
        self.warmup_steps = config.warmup_steps
        self.steps = config.max_steps + (config.online_steps - config.warmup_steps) * config.utd  # the run's updates
        self.batch_size, self.online_batch = config.batch_size, round(config.online_ratio * config.batch_size)
        self.explore, self.mean, self.std, self.scale, self.gamma = explore, mean, std, scale, config.gamma
        self.seed, self.episodes, self.online, self.announced = config.seed + ONLINE_SEEDS, 0, False, False
        self.env = training_environment(dataset)

    def periodic(self, step: int) -> None:
        self.online = step > self.offline_steps
        if not self.online:
            return
        if not self.announced:  # the first online update of this call: the switch, or a resume after it
            self.announced = True
            print(f"update {self.offline_steps}: offline phase done, online phase begins: {self.online_steps} "
                  f"environment steps ({self.warmup_steps} of them random warm-up), {self.utd} update(s) per step, "
                  f"{self.steps - self.offline_steps} online updates" if step == self.offline_steps + 1 else
                  f"update {step - 1}: online phase resumes at environment step {self.online_buffer.size} of "
                  f"{self.online_steps}", flush=True)
        while self.online_buffer.size < self.warmup_steps:  # SAC's start_steps: uniform random actions, no updates
            self.collect(self.uniform_actions(), self.warmup_steps)
        if step - self.offline_steps > (self.online_buffer.size - self.warmup_steps) * self.utd:
            self.collect(self.explore, self.online_steps)

    def collect(self, explore: Callable[[torch.Tensor], torch.Tensor], until: int) -> None:
        """One episode of explore into the online buffer, cut when the buffer holds `until` transitions."""
        mean, std = (torch.as_tensor(x, device=self.device) for x in (self.mean, self.std))
        episode = collect_episode(self.env, explore, mean, std, self.seed + self.episodes,
                                  until - self.online_buffer.size)
        self.online_buffer.add(transitions(episode, self.mean, self.std, self.scale, self.gamma))
        self.episodes += 1
        done, before = self.online_buffer.size, self.online_buffer.size - len(episode["rewards"])
        if 10 * done // self.online_steps > 10 * before // self.online_steps:  # the online phase's own progress
            print(f"online: {done} of {self.online_steps} environment steps ({100 * done // self.online_steps}%), "
                  f"{self.episodes} episodes", flush=True)

    def uniform_actions(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """a ~ Unif(action space), from a generator seeded by the episode's number (a resume draws the same)."""
        rng, space = np.random.default_rng(self.seed + self.episodes), self.env.action_space
        return lambda state: torch.as_tensor(rng.uniform(space.low, space.high), dtype=torch.float32)[None]

    def sample(self) -> dict[str, torch.Tensor]:
        if not self.online:
            return self.buffer.sample(self.batch_size)
        offline = self.buffer.sample(self.batch_size - self.online_batch)
        online = self.online_buffer.sample(self.online_batch)
        return {k: torch.cat([offline[k], online[k]]) for k in offline}

    def counters(self) -> dict:
        return {"env_steps": self.online_buffer.size}

    def state_dict(self) -> dict:
        # clone(): a slice alone would save the whole preallocated tensor
        buffer = {k: v[:self.online_buffer.size].clone() for k, v in self.online_buffer.data.items()}
        return {**self.trainer.state_dict(), "online": {"episodes": self.episodes, "buffer": buffer}}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        online = state.pop("online")
        self.trainer.load_state_dict(state)
        self.episodes, self.online_buffer.size = online["episodes"], 0
        self.online_buffer.add(online["buffer"])
# --- online: end
