"""tools/make_datasets.py (its parts in tools/datasets/) and the shared block's flattening: the D4RL recipe, atomic
writes, bad input."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

import bc_filtered  # the shared block (identical in every script)
from tools import make_datasets
from tools.datasets import recipe, store, table
from conftest import TINY


def episode(rewards, terminated, start=0.0):
    """A fake Minari episode with observations start, start+1, ... (T+1 of them)."""
    n = len(rewards)
    obs = (start + np.arange(n + 1, dtype=np.float32))[:, None].repeat(2, 1)
    term = np.zeros(n, bool)
    trunc = np.zeros(n, bool)
    (term if terminated else trunc)[-1] = True
    return SimpleNamespace(observations=obs, actions=np.zeros((n, 1), np.float32),
                           rewards=np.asarray(rewards, np.float64), terminations=term, truncations=trunc)


def fake_dataset(*episodes):
    """A fake Minari dataset of these episodes: 2-dim observations, 1-dim actions."""
    from gymnasium.spaces import Box

    return SimpleNamespace(iterate_episodes=lambda: iter(episodes), observation_space=Box(-1e3, 1e3, (2,)),
                           action_space=Box(-1, 1, (1,)))


def test_flatten_terminals_come_from_terminations_only():
    fake = fake_dataset(episode([1, 2, 3], terminated=True), episode([4, 5], terminated=False, start=100))
    data = bc_filtered.flatten_episodes(fake)
    assert data["terminals"].tolist() == [0, 0, 1, 0, 0]  # the truncated end is not a terminal
    assert data["episode_ends"].tolist() == [0, 0, 1, 0, 1]
    assert data["episode_ids"].tolist() == [0, 0, 0, 1, 1]
    assert data["episode_returns"].tolist() == [6, 6, 6, 9, 9]


def test_flatten_next_observation_at_episode_end_is_the_episodes_own():
    fake = fake_dataset(episode([1, 2], terminated=False), episode([3], terminated=True, start=100))
    data = bc_filtered.flatten_episodes(fake)
    # the last transition of episode 0 goes to its own final observation (2), not to episode 1's first (100)
    assert data["next_observations"][:, 0].tolist() == [1, 2, 101]
    assert data["observations"][:, 0].tolist() == [0, 1, 100]


def test_builder_writes_a_complete_minari_dataset(minari_root):
    import minari

    ds = minari.load_dataset("local/pendulum/medium-v0")
    assert ds.total_steps == TINY
    metadata = ds.storage.metadata
    index = json.loads((recipe.BEHAVIOR_DIR / "pendulum" / "index.json").read_text())
    assert metadata["ref_min_score"] == pytest.approx(index["ref_min_score"])
    assert metadata["ref_max_score"] == pytest.approx(index["ref_max_score"])
    assert "seed" in metadata["description"] and "medium" in metadata["description"]
    env = ds.recover_environment(eval_env=True)
    assert env.spec.id == "Pendulum-v1"
    episodes = list(ds.iterate_episodes())
    assert episodes[-1].truncations[-1]  # cut at the requested size, marked as a time-limit end
    replay = minari.load_dataset("local/pendulum/medium-replay-v0")
    assert replay.total_steps == index["medium"]["step"]  # every transition up to the medium checkpoint


def test_medium_expert_is_medium_then_expert_collected_once(minari_root, monkeypatch):
    import shutil

    import minari

    def observations(kind):
        return np.concatenate([ep.observations for ep in minari.load_dataset(f"local/pendulum/{kind}-v0").iterate_episodes()])

    before = {kind: observations(kind) for kind in ("medium", "expert")}  # the fixture's, built by another call
    calls = []
    collect = recipe.collect
    monkeypatch.setattr(recipe, "collect", lambda *args: calls.append(args[-1]) or collect(*args))
    assert make_datasets.main(["--envs", "pendulum", "--kinds", "medium", "expert", "medium-expert",
                               "--size", str(TINY), "--force"]) == 0
    assert calls == ["pendulum medium", "pendulum expert"]  # medium-expert reused both
    np.testing.assert_array_equal(observations("medium-expert"), np.concatenate([before["medium"], before["expert"]]))
    shutil.rmtree(minari_root / "local" / "pendulum" / "medium-expert-v0")


def test_normalized_scores_of_random_and_expert_are_near_0_and_100(minari_root):
    # ref_min / ref_max are the random and expert policies' mean returns over 50 episodes; fresh
    # episodes of the same policies must score near 0 and 100.
    import minari

    make_datasets.main(["--envs", "pendulum", "--kinds", "random", "--size", str(TINY * 2)])
    for kind, target in (("random", 0.0), ("expert", 100.0)):
        ds = minari.load_dataset(f"local/pendulum/{kind}-v0")
        returns = np.array([ep.rewards.sum() for ep in ds.iterate_episodes()])
        score = 100 * np.mean(minari.get_normalized_score(ds, returns))
        assert abs(score - target) < 20, (kind, score)


def test_existing_dataset_is_kept_without_force(minari_root, capsys):
    path = minari_root / "local" / "pendulum" / "medium-v0"
    before = (path / "data" / "metadata.json").stat().st_mtime_ns
    assert make_datasets.main(["--envs", "pendulum", "--kinds", "medium", "--size", "100"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (path / "data" / "metadata.json").stat().st_mtime_ns == before


def test_interrupted_build_leaves_the_old_dataset_and_no_partial_one(minari_root, monkeypatch):
    import minari

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", crash)
    with pytest.raises(KeyboardInterrupt):
        make_datasets.main(["--envs", "pendulum", "--kinds", "medium", "--size", "100", "--force"])
    with pytest.raises(KeyboardInterrupt):
        make_datasets.main(["--envs", "pendulum", "--kinds", "medium-expert", "--size", "100"])
    monkeypatch.undo()
    assert minari.load_dataset("local/pendulum/medium-v0").total_steps == TINY  # the old one, intact
    assert not (minari_root / "local" / "pendulum" / "medium-expert-v0").exists()
    assert not [p for p in minari_root.iterdir() if p.name.startswith(".building-")]


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_call(minari_root, capsys):
    """The old copy was moved aside and the process died before the new one was moved in: the next call
    of the builder puts the old copy back before anything else."""
    import minari

    final = minari_root / "local" / "pendulum" / "medium-v0"
    aside = minari_root / store.REPLACED / "local" / "pendulum" / "medium-v0"
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(final, aside)
    assert make_datasets.main(["--envs", "pendulum", "--kinds", "medium", "--size", "100"]) == 0
    assert "restored local/pendulum/medium-v0" in capsys.readouterr().out
    assert minari.load_dataset("local/pendulum/medium-v0").total_steps == TINY and not aside.exists()


@pytest.mark.parametrize("args, words", [
    (["--envs", "cartpole"], ["'cartpole'", "pendulum, hopper"]),
    (["--kinds", "medium", "great"], ["'great'", "random, medium, expert, medium-replay, medium-expert"]),
])
def test_bad_input_is_one_sentence(args, words, capsys):
    assert make_datasets.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words)


def test_behavior_training_resumes_where_it_stopped(tmp_path):
    """--train-behavior runs span sessions: a run stopped by its wall-time cap continues from its saved
    state (same checkpoints, the replay grown, the cut episode marked truncated), and refuses a state
    made with other settings."""
    import math

    from tools.behavior_sac import SACSettings, train_behavior

    state = tmp_path / "train_state.pt"
    settings = SACSettings(total_steps=400, start_steps=100, eval_every=200, eval_episodes=1, hidden=16,
                           batch_size=8, wall_seconds=0.0)
    finished, checkpoints, replay, _ = train_behavior("Pendulum-v1", settings, state)
    assert not finished and [c["step"] for c in checkpoints] == [200] and replay.n == 200
    finished, checkpoints, replay, _ = train_behavior("Pendulum-v1", settings, state)
    assert finished and [c["step"] for c in checkpoints] == [200, 400] and replay.n == 400
    assert replay.trunc[199]  # the episode cut by the stop
    changed = SACSettings(total_steps=400, start_steps=100, eval_every=200, eval_episodes=1, hidden=32, batch_size=8)
    with pytest.raises(ValueError, match="other settings"):
        train_behavior("Pendulum-v1", changed, state)
    verified = SACSettings(total_steps=400, start_steps=100, eval_every=200, eval_episodes=1, verify_episodes=2,
                           hidden=16, batch_size=8, stop_return=-math.inf)
    finished, checkpoints, _, _ = train_behavior("Pendulum-v1", verified, tmp_path / "other.pt")
    assert finished and len(checkpoints) == 1 and "verified_return" in checkpoints[0]


def test_expert_target_is_judged_on_the_expert_data_when_it_is_built(monkeypatch):
    """Two 50-episode evaluations of one Hopper expert gave 3153.9 and 2909.8: the ~1000 episodes of its
    dataset decide, and the row says which measurement did."""
    index = {"checkpoints": [{"step": 240_000, "cpu_seconds": 3600.0, "eval_return": 3219.2, "verified_return": 3153.9}],
             "medium": {"step": 150_000, "mean_return": 951.9}, "expert": {"step": 240_000, "mean_return": 2909.8},
             "ref_min_score": 18.0}
    monkeypatch.setattr(table, "load_behavior", lambda env: index)
    [built] = table.behavior_lines("hopper", 3045.2)
    assert "| 3045.2 |" in built and "verified 3153.9" in built and "expert data meets the 3000 target" in built
    [unbuilt] = table.behavior_lines("hopper", None)
    assert "| not built |" in unbuilt and "reference evaluation BELOW the 3000 target" in unbuilt
    [short] = table.behavior_lines("hopper", 2950.0)
    assert "expert data BELOW the 3000 target" in short


def test_a_killed_build_leaves_no_folder_behind_for_long(minari_root, capsys):
    """A build killed mid-write leaves .building-<pid>-*; the next call removes it unless its process still runs."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = minari_root / f"{store.BUILDING}{gone.stdout.strip()}-abc"
    live = minari_root / f"{store.BUILDING}{os.getpid()}-xyz"
    for folder in (dead, live):
        (folder / "local").mkdir(parents=True)
        (folder / "local" / "part.hdf5").write_bytes(b"0" * 1000)
    assert make_datasets.main(["--envs", "pendulum", "--kinds", "medium", "--size", "100"]) == 0
    assert not dead.exists() and live.exists()
    assert f"removed {dead.name}, left by an interrupted build" in capsys.readouterr().out


@pytest.mark.parametrize("name,damage,kind", [
    ("index.json", b"\xff\xfe{", "medium"),
    ("index.json", b"[1, 2]", "medium"),
    ("index.json", b'{"env_id": "Pendulum-v1"}', "medium"),
    ("index.json", b"[" * 100000, "medium"),
    ("medium.pt", b"not a checkpoint", "medium"),
    ("medium.pt", None, "medium"),  # the expert's weights under another name: fine; a dict of other tensors: refused
    ("replay_medium.npz", b"PK\x03\x04 cut", "medium-replay"),
], ids=["bad UTF-8 index", "list index", "index without fields", "nested index", "garbage actor", "foreign actor",
        "cut replay"])
def test_a_bad_behavior_file_is_one_sentence(name, damage, kind, tmp_path, monkeypatch, capsys):
    """A damaged file of tools/behavior/<env>: one `error:` line naming it, exit status 2, no dataset written."""
    import shutil

    import torch

    behavior = tmp_path / "behavior"
    shutil.copytree(recipe.BEHAVIOR_DIR / "pendulum", behavior / "pendulum")
    if damage is None:
        torch.save({"weight": torch.zeros(2, 2)}, behavior / "pendulum" / name)
    else:
        (behavior / "pendulum" / name).write_bytes(damage)
    monkeypatch.setattr(recipe, "BEHAVIOR_DIR", behavior)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert make_datasets.main(["--envs", "pendulum", "--kinds", kind, "--size", "50", "--table", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the behavior file ") and name in err[0], err
    assert not list((tmp_path / "minari").rglob("*.hdf5"))
