"""The shared appendix's own pieces, tested in-process on its canonical source (tools/shared/appendix.py):
config decoding and ranges, soft_update, data checks, and the safe-run rules of fit() (the run's record,
the lock, checkpoints that cannot run code, resume without repeated log rows, a stop before finishing up)."""

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("appendix", ROOT / "tools" / "shared" / "appendix.py")
appendix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(appendix)


@dataclasses.dataclass
class Config:
    seed: int = 0
    device: str = "cpu"
    dataset_id: str = "local/pendulum/medium-replay-v0"
    max_steps: int = 6
    batch_size: int = 4
    eval_every: int = 3
    eval_episodes: int = 1
    checkpoints_path: Optional[str] = None
    resume: bool = True
    stop_after: int = 0
    logging: str = "disabled"
    project: str = "test"
    compile: bool = False
    precision: str = "fp32"
    tau: float = 0.005
    actor_lr: float = 1e-3

    def __post_init__(self):
        appendix.check_ranges(self, tau="in (0, 1]")


class Trainer:
    """The smallest trainer of the contract: one linear layer fitted to noise with Adam."""

    def __init__(self, lr: float = 1e-3):
        torch.manual_seed(0)
        self.device = torch.device("cpu")
        self.net = nn.Linear(3, 1)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr)

    def update(self, batch: dict, step: int) -> dict:
        loss = (self.net(batch["x"]).squeeze(-1) - batch["y"]).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


def fit(config: Config, trainer: Optional[Trainer] = None) -> dict:
    trainer = trainer or Trainer(config.actor_lr)
    return appendix.fit(config, algo="test", trainer=trainer,
                        sample=lambda: {"x": torch.randn(config.batch_size, 3), "y": torch.randn(config.batch_size)},
                        evaluate=lambda: {"return": torch.tensor(1.0)}, extra={"state_mean": np.zeros(3, np.float32)})


def parse(monkeypatch, *argv: str, config_class=Config):
    monkeypatch.setattr(sys, "argv", ["script.py", *argv])
    return appendix.parse_config(config_class)


def parse_fails_with(capsys, monkeypatch, expected: str, *argv: str, config_class=Config):
    """A bad command line or config: one `error:` line on stderr, exit status 2 (argparse's)."""
    with pytest.raises(SystemExit) as error:
        parse(monkeypatch, *argv, config_class=config_class)
    lines = capsys.readouterr().err.splitlines()
    assert error.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def fails_with(expected: str, call, *args):
    with pytest.raises(SystemExit) as error:
        call(*args)
    assert str(error.value).startswith("error: ") and expected in str(error.value), error.value


def test_soft_update_moves_the_target_by_tau():
    import td3_bc  # soft_update lives in the critic block

    source, target = nn.Linear(2, 2), nn.Linear(2, 2)
    expected = [0.1 * s + 0.9 * t for s, t in zip(source.parameters(), target.parameters())]
    td3_bc.soft_update(target, source, 0.1)
    assert all(torch.allclose(t, e) for t, e in zip(target.parameters(), expected))


@pytest.mark.parametrize("text,value", [("true", True), ("yes", True), ("1", True), ("False", False), ("no", False),
                                        ("0", False), ("TRUE", True)])
def test_booleans_take_only_true_and_false(monkeypatch, text, value):
    assert parse(monkeypatch, "--resume", text).resume is value


@pytest.mark.parametrize("argv,expected", [
    (["--resume", "flase"], "resume must be true or false, got 'flase'"),
    (["--resume", "maybe"], "resume must be true or false, got 'maybe'"),
    (["--max_steps", "1.5"], "max_steps must be an integer, got 1.5"),
    (["--max_steps", "5e9"], "max_steps must be an integer, got '5e9'"),
    (["--max_steps", "abc"], "max_steps must be an integer"),
    (["--tau", "nan"], "tau must be a finite number"),
    (["--actor_lr", "inf"], "actor_lr must be a finite number"),
    (["--actor_lr", "1e999"], "actor_lr must be a finite number"),
    (["--tau", "2"], "tau must be in (0, 1], got 2.0"),
    (["--actor_lr", "-1"], "actor_lr must be above 0"),
    (["--seed", "-1"], "seed must be in [0, 4294967296), got -1"),
    (["--seed", "5000000000"], "seed must be in [0, 4294967296), got 5000000000"),
    (["--batch_size", "100000000000"], "batch_size must be in [1, 1048576], got 100000000000"),
    (["--logging", "bogus"], "logging must be offline, online or disabled"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--max_steps"], "argument --max_steps: expected one argument"),
    (["--config_path"], "argument --config_path: expected one argument"),
    (["--typo", "3"], "unrecognized arguments: --typo 3"),
    (["--max", "3"], "unrecognized arguments: --max 3"),  # no abbreviations
    (["stray"], "unrecognized arguments: stray"),
])
def test_bad_values_are_one_sentence(capsys, monkeypatch, argv, expected):
    parse_fails_with(capsys, monkeypatch, expected, *argv)


def test_floats_read_as_text_by_yaml_are_numbers(monkeypatch, tmp_path):
    (tmp_path / "lr.yaml").write_text("actor_lr: 1e-3\n")  # YAML 1.1 reads no float without a dot: the text '1e-3'
    assert parse(monkeypatch, "--config_path", str(tmp_path / "lr.yaml")).actor_lr == 1e-3
    assert parse(monkeypatch, "--actor_lr", "2e-4", "--max_steps", "7").actor_lr == 2e-4


@pytest.mark.parametrize("text,expected", [
    ("- 1\n- 2\n", "must map TrainConfig fields to values, not a list"),
    ("max_stepz: 3\n", "must map TrainConfig fields to values, not max_stepz"),
    ("max_steps: [1\n", "is not readable UTF-8 YAML"),
    (b"\xff\xfe max_steps: 3", "is not readable UTF-8 YAML"),
    ("!!python/object/apply:os.system [\"true\"]\n", "is not readable UTF-8 YAML"),
    ("max_steps: 0\n", "max_steps must be at least 1, got 0"),
    ("checkpoints_path: {a: 1}\n", "not checkpoints_path: {'a': 1}"),  # a text field: no mapping, no list
    ("checkpoints_path: [a, b]\n", "not checkpoints_path: ['a', 'b']"),
])
def test_bad_config_files_are_one_sentence(capsys, monkeypatch, tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    parse_fails_with(capsys, monkeypatch, expected, "--config_path", str(path))
    parse_fails_with(capsys, monkeypatch, "is not readable UTF-8 YAML", "--config_path", str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("argv,expected", [
    (["--online_ratio", "1.5"], "online_ratio must be in [0, 1], got 1.5"),
    (["--online_steps", "-1"], "online_steps must be 0 or more"),
    (["--utd", "0"], "utd must be at least 1"),
    (["--max_steps", "0"], "max_steps must be at least 1, got 0"),  # an offline run needs updates
    (["--online_steps", "5", "--warmup_steps", "6"], "warmup_steps must be in [0, 5], got 6"),
    (["--max_steps", "0", "--online_steps", "5", "--bc_steps", "3"], "bc_steps must be in [0, 1), got 3"),
])
def test_bad_online_values_are_one_sentence(capsys, monkeypatch, argv, expected):
    import cql  # the online block's ranges, and cql's warm start

    parse_fails_with(capsys, monkeypatch, expected, *argv, config_class=cql.TrainConfig)


def test_a_run_from_scratch_has_no_offline_updates(monkeypatch):
    import iql

    assert parse(monkeypatch, "--max_steps", "0", "--online_steps", "5", config_class=iql.TrainConfig).max_steps == 0


class CountingTrainer(Trainer):
    def counters(self) -> dict:
        return {"env_steps": 7}


def test_steps_beyond_max_steps_evaluate_at_the_switch_and_log_counters(tmp_path):
    """`steps` (an online phase's total) runs past max_steps; evaluations at eval_every, at max_steps and at the end;
    every row carries the trainer's counters beside step."""
    config = Config(checkpoints_path=str(tmp_path / "run"), max_steps=4, eval_every=3)
    appendix.fit(config, algo="test", trainer=CountingTrainer(), steps=8,
                 sample=lambda: {"x": torch.randn(4, 3), "y": torch.randn(4)}, evaluate=lambda: {"return": 1.0})
    rows = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["env_steps"]) for r in rows if "eval/return" in r] == [(3, 7), (4, 7), (6, 7), (8, 7)]
    assert json.loads((tmp_path / "run" / "finished.json").read_text())["step"] == 8


def test_printed_evaluations_carry_the_counters(tmp_path, capsys):
    """The console's evaluation lines show env_steps (an online phase's progress) beside the scores."""
    config = Config(checkpoints_path=str(tmp_path / "run"), max_steps=4, eval_every=3)
    appendix.fit(config, algo="test", trainer=CountingTrainer(), steps=6,
                 sample=lambda: {"x": torch.randn(4, 3), "y": torch.randn(4)}, evaluate=lambda: {"return": 1.0})
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert printed == ["step 3: env_steps 7, return 1.00", "step 4: env_steps 7, return 1.00",
                       "step 6: env_steps 7, return 1.00"]


def test_yaml_then_command_line_and_an_empty_yaml_is_all_defaults(monkeypatch, tmp_path):
    empty, some = tmp_path / "empty.yaml", tmp_path / "some.yaml"
    empty.write_text("")
    some.write_text("max_steps: 10\ntau: 0.5\n")
    assert parse(monkeypatch, "--config_path", str(empty)) == Config()
    config = parse(monkeypatch, f"--config_path={some}", "--tau", "0.25")
    assert (config.max_steps, config.tau) == (10, 0.25)


class Episode:
    def __init__(self, rewards, observations=None):
        n = len(rewards)
        self.rewards = np.asarray(rewards, np.float32)
        self.observations = np.zeros((n + 1, 2), np.float32) if observations is None else observations
        self.actions = np.zeros((n, 1), np.float32)
        self.terminations = np.zeros(n, bool)
        self.truncations = np.zeros(n, bool)


class Dataset:
    def __init__(self, episodes):
        self.episodes = episodes
        self.spec = type("Spec", (), {"dataset_id": "local/test/bad-v0"})()
        self.observation_space, self.action_space = gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (1,))

    def iterate_episodes(self):
        return iter(self.episodes)


def test_bad_data_is_one_sentence_naming_the_field_and_index():
    fails_with("holds no transitions", appendix.flatten_episodes, Dataset([]))
    fails_with("in rewards at transition 3", appendix.flatten_episodes,
               Dataset([Episode([0.0, 1.0]), Episode([1.0, np.nan])]))
    observations = np.zeros((3, 2), np.float32)
    observations[1, 1] = 3e38
    fails_with("in observations at transition 1", appendix.flatten_episodes, Dataset([Episode([0.0, 1.0], observations)]))


def damaged(field, rows=0, width=None):
    """Two episodes of 12 steps, the second's `field` `rows` rows longer (negative: shorter) or `width` wide."""
    episodes = [Episode([0.0] * 12), Episode([1.0] * 12)]
    value = getattr(episodes[1], field)
    value = np.resize(value, (len(value) + rows, *value.shape[1:]))
    setattr(episodes[1], field, value if width is None else np.zeros((len(value), width), np.float32))
    return Dataset(episodes)


# Inconsistent data (issue 45, item 4): one sentence naming the episode and the field, before training.
MISALIGNED = {
    "actions a row short": (damaged("actions", -1), "episode 1's actions have shape (11, 1), not (12, 1)"),
    "rewards 10 rows short": (damaged("rewards", -10), "episode 1's rewards have shape (2,), not (12,)"),
    "2-D actions for a 1-D action space": (damaged("actions", width=2), "episode 1's actions have shape (12, 2)"),
    "observations longer than actions": (damaged("observations", 2), "episode 1's observations have shape (15, 2)"),
    "3-D observations for a 2-D space": (damaged("observations", width=3), "episode 1's observations have shape (13, 3)"),
}


@pytest.mark.parametrize("case", MISALIGNED)
def test_misaligned_data_is_one_sentence_naming_the_episode_and_field(case):
    dataset, expected = MISALIGNED[case]
    fails_with(expected, appendix.flatten_episodes, dataset)


class EnvDataset(Dataset):
    """A dataset whose environment is Pendulum (observations 3-D, actions 1-D), or none (no environment spec)."""

    def __init__(self, observation_dim=3, env=True):
        super().__init__([])
        self.observation_space = gym.spaces.Box(-1, 1, (observation_dim,))
        self.env = env

    def recover_environment(self, eval_env=False):
        if not self.env:
            raise ValueError("Environment cannot be recovered when env_spec is None")  # minari's own words
        return gym.make("Pendulum-v1")


def one_episode():
    return {"episode_returns": np.full(5, -120.0), "episode_ends": np.r_[0, 0, 0, 0, 1]}


# The data against its environment, and a reward scale that would be absurd (issue 45, item 4): one sentence.
ENV_MISMATCH = {
    "4-D observations for a 3-D env": (lambda iql: iql.checked_environment("d", EnvDataset(4)),
                                       "has observations of shape (4,), but its environment Pendulum-v1 has (3,)"),
    "no environment spec": (lambda iql: iql.checked_environment("d", EnvDataset(env=False)),
                            "names no environment that can be made here (Environment cannot be recovered"),
    "one episode: reward scale": (lambda iql: iql.reward_scale(one_episode(), True),
                                  "the dataset's 1 episode(s) all return -120; pass --normalize_reward false"),
}


@pytest.mark.parametrize("case", ENV_MISMATCH)
def test_data_against_its_environment_is_one_sentence(case):
    import iql

    call, expected = ENV_MISMATCH[case]
    fails_with(expected, call, iql)
    assert iql.checked_environment("d", EnvDataset(3)).spec.id == "Pendulum-v1"


def test_statistics_do_not_overflow():
    observations = np.full((4, 2), 1e30, np.float32)
    mean, std = appendix.state_statistics(observations, True)
    assert np.isfinite(mean).all() and np.isfinite(std).all()


def test_checkpoint_holding_code_is_refused_and_nothing_runs(tmp_path):
    """A pickle whose __reduce__ would run a command: torch.load(weights_only=True) refuses it."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"step": 3, "trainer": Payload()}, tmp_path / "checkpoint.pt")
    fails_with("holds objects other than tensors", appendix.resume, tmp_path / "checkpoint.pt", Trainer(),
               torch.device("cpu"))
    assert not marker.exists()


def test_checkpoint_round_trips_every_rng(tmp_path):
    trainer = Trainer()
    appendix.set_seed(3)
    appendix.save_checkpoint(tmp_path / "checkpoint.pt", 40, trainer, Config(), {"state_mean": np.ones(2)}, 12.0)
    expected = (np.random.rand(), torch.rand(1), __import__("random").random())
    appendix.set_seed(99)
    assert appendix.resume(tmp_path / "checkpoint.pt", Trainer(), torch.device("cpu")) == (40, 12.0)
    assert (np.random.rand(), torch.rand(1), __import__("random").random()) == expected


def test_a_resume_under_another_config_is_refused(tmp_path):
    config = Config(checkpoints_path=str(tmp_path / "run"), stop_after=3)
    fit(config)
    fails_with("actor_lr: 0.001 there, 0.01 now", fit, dataclasses.replace(config, actor_lr=1e-2))
    fit(dataclasses.replace(config, stop_after=0, eval_every=2, max_steps=8))  # run fields may change
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["algo"] == "test" and record["config"]["max_steps"] == 8


def test_resume_false_moves_the_earlier_run_aside(tmp_path):
    config = Config(checkpoints_path=str(tmp_path / "run"))
    fit(config)
    fit(dataclasses.replace(config, resume=False, actor_lr=1e-2))
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and (moved[0] / "finished.json").exists()
    rows = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]


def test_the_log_never_repeats_a_step_after_a_resume(tmp_path):
    config = Config(checkpoints_path=str(tmp_path / "run"), stop_after=3)
    fit(config)
    with open(tmp_path / "run" / "log.jsonl", "a") as log:  # a row written after the checkpoint, then a kill
        log.write(json.dumps({"step": 4, "wall_time": 0.0}) + "\n")
    fit(dataclasses.replace(config, stop_after=0))
    steps = [json.loads(r)["step"] for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [3, 6]


def test_a_run_stopped_after_its_last_update_finishes_up_on_the_next_call(tmp_path):
    config = Config(checkpoints_path=str(tmp_path / "run"))
    fit(config)
    (tmp_path / "run" / "finished.json").unlink()
    assert fit(config) == {"eval/return": 1.0}
    assert json.loads((tmp_path / "run" / "finished.json").read_text())["step"] == 6


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        fails_with("another run is writing", fit, Config(checkpoints_path=str(run_dir)))


def test_a_copied_script_imports_and_runs_where_the_os_has_no_fcntl(tmp_path, monkeypatch):
    """No top-level `import fcntl` (Windows has none): the lock is taken where the OS has it, skipped elsewhere."""
    source = (ROOT / "tools" / "shared" / "appendix.py").read_text()
    assert "\nimport fcntl" not in source and "\nimport subprocess" not in source
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError, as on Windows
    assert fit(Config(checkpoints_path=str(tmp_path / "run"))) == {"eval/return": 1.0}


def test_run_json_records_the_size_and_build_of_the_data(tmp_path):
    data = {"rewards": np.arange(5, dtype=np.float32), "episode_ends": np.array([0, 1, 0, 0, 1], np.float32)}
    records = []
    for name, rewards in (("a", data["rewards"]), ("b", data["rewards"] + 1)):
        config = Config(checkpoints_path=str(tmp_path / name))
        appendix.fit(config, algo="test", trainer=Trainer(), sample=lambda: {"x": torch.randn(4, 3), "y": torch.randn(4)},
                     evaluate=lambda: {"return": 1.0}, data={**data, "rewards": rewards})
        records.append(json.loads((tmp_path / name / "run.json").read_text())["dataset"])
    assert {k: records[0][k] for k in ("id", "episodes", "transitions")} == \
           {"id": "local/pendulum/medium-replay-v0", "episodes": 2, "transitions": 5}
    assert records[0]["sha256"] != records[1]["sha256"]  # another build of the same id


def test_an_unwritable_run_directory_is_one_sentence(tmp_path):
    (tmp_path / "file").write_text("")
    fails_with("cannot write the run directory", fit, Config(checkpoints_path=str(tmp_path / "file")))
    fails_with("cannot write the run directory", fit, Config(checkpoints_path=str(tmp_path / "file" / "run")))


@pytest.mark.parametrize("name,expected", [("cpu", "cpu"), ("auto", "cpu" if not torch.cuda.is_available() else "cuda")])
def test_pick_device(name, expected):
    assert appendix.pick_device(name).type == expected


def rows(run_dir: Path) -> list[int]:
    return [json.loads(r)["step"] for r in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("resume", [True, False])
@pytest.mark.parametrize("left", [("log.jsonl", "finished.json", "run.json"), ("log.jsonl", "finished.json"),
                                  ("log.jsonl",)])
def test_a_rerun_into_a_run_without_its_checkpoint_keeps_every_row(tmp_path, resume, left):
    """A finished run copied out without checkpoint.pt (or with it deleted), or parts of it: a rerun, resumed or with
    --resume false, moves it aside whole; the new run's finished.json describes the new run's files."""
    run_dir = tmp_path / "run"
    fit(Config(checkpoints_path=str(run_dir)))
    old = {name: (run_dir / name).read_text() for name in left}
    for path in run_dir.iterdir():
        if path.name not in left:
            path.unlink()
    fit(Config(checkpoints_path=str(run_dir), resume=resume))
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and {name: (moved[0] / name).read_text() for name in left} == old
    assert rows(run_dir) == [3, 6] and json.loads((run_dir / "finished.json").read_text())["step"] == 6


def test_a_continuation_stopped_midway_is_not_finished(tmp_path):
    """A finished run continued with a larger max_steps and stopped midway: no finished.json of the old step."""
    config = Config(checkpoints_path=str(tmp_path / "run"))
    fit(config)
    fit(dataclasses.replace(config, max_steps=12, stop_after=3))
    assert not (tmp_path / "run" / "finished.json").exists() and rows(tmp_path / "run") == [3, 6, 9]
    fit(dataclasses.replace(config, max_steps=12))
    assert json.loads((tmp_path / "run" / "finished.json").read_text())["step"] == 12
    assert rows(tmp_path / "run") == [3, 6, 9, 12]


def test_a_log_whose_last_line_a_kill_cut_resumes(tmp_path):
    config = Config(checkpoints_path=str(tmp_path / "run"), stop_after=3)
    fit(config)
    with open(tmp_path / "run" / "log.jsonl", "a") as log:  # a kill in the middle of writing the next row
        log.write('{"step": 6, "wall_ti')
    assert fit(dataclasses.replace(config, stop_after=0)) == {"eval/return": 1.0}
    assert rows(tmp_path / "run") == [3, 6]


def drop_step(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    del state["step"]
    torch.save(state, path)


@pytest.mark.parametrize("damage,expected", [
    (lambda run_dir: (run_dir / "run.json").write_text(""), "its run.json is not readable"),
    (lambda run_dir: (run_dir / "run.json").write_text("[1, 2]"), "its run.json is not readable"),
    (lambda run_dir: (run_dir / "run.json").write_text('{"config": [1]}'), "its run.json is not readable"),
    (lambda run_dir: (run_dir / "run.json").write_bytes(b"\xff{"), "its run.json is not readable"),
    (lambda run_dir: drop_step(run_dir / "checkpoint.pt"), "does not match this script and config"),
], ids=["empty run.json", "list run.json", "wrong config", "bad UTF-8 run.json", "checkpoint without step"])
def test_damaged_run_files_are_one_sentence_and_kept(tmp_path, damage, expected):
    run_dir = tmp_path / "run"
    fit(Config(checkpoints_path=str(run_dir), stop_after=3))
    damage(run_dir)
    kept = ("log.jsonl", "checkpoint.pt") + ("run.json",) * ("run.json" in expected)  # a resume rewrites run.json
    before = {name: (run_dir / name).read_bytes() for name in kept}
    fails_with(expected, fit, Config(checkpoints_path=str(run_dir)))
    assert {name: (run_dir / name).read_bytes() for name in kept} == before


@pytest.mark.parametrize("text", ["{", "[]", "\x00", "[" * 100000 + "]" * 100000])
def test_a_corrupt_finished_json_is_written_again(tmp_path, text):
    run_dir = tmp_path / "run"
    fit(Config(checkpoints_path=str(run_dir)))
    (run_dir / "finished.json").write_text(text)
    assert fit(Config(checkpoints_path=str(run_dir))) == {"eval/return": 1.0}
    assert json.loads((run_dir / "finished.json").read_text()) == {"step": 6, "eval/return": 1.0}
    assert rows(run_dir) == [3, 6]
