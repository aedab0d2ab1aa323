"""The online block (offline-to-online fine-tuning) and the transitions block's return-to-go: G by hand on a
terminated and a truncated episode, one collected episode, the episode-by-episode schedule of utd updates per
environment step, the mixed batch, the checkpoint of the online episodes, bad input, and runs of iql.py and cql.py
(--calibrated) through the command line whose resume from a stop in the online phase is bit-identical."""

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import cql
import iql
import td3_bc
from conftest import tensors_of
from test_scripts import final_weights, read_log, run

GAMMA = 0.9


def two_episodes():
    """A 3-step episode that terminates and a 2-step one cut by a time limit (terminal 0 at its end)."""
    return {"rewards": np.array([1.0, 2.0, 3.0, 10.0, -1.0], np.float32),
            "terminals": np.array([0, 0, 1, 0, 0], np.float32),
            "episode_ends": np.array([0, 0, 1, 0, 1], np.float32)}


def test_returns_to_go_by_hand():
    data = two_episodes()
    expected = [1 + GAMMA * (2 + GAMMA * 3), 2 + GAMMA * 3, 3, 10 + GAMMA * -1, -1]  # nothing after either end
    assert iql.returns_to_go(data["rewards"], data["episode_ends"], GAMMA).tolist() == pytest.approx(expected)


def test_transitions_carry_the_return_to_go_of_the_scaled_rewards_only_when_asked():
    data = {**two_episodes(), "observations": np.ones((5, 2), np.float32), "actions": np.zeros((5, 1), np.float32),
            "next_observations": np.full((5, 2), 3.0, np.float32)}
    plain = iql.transitions(data, np.ones(2, np.float32), np.full(2, 2.0, np.float32), 0.5)
    assert "returns_to_go" not in plain and plain["next_observations"].tolist() == [[1.0, 1.0]] * 5
    scaled = iql.transitions(data, np.ones(2, np.float32), np.full(2, 2.0, np.float32), 0.5, GAMMA)
    unscaled = iql.returns_to_go(data["rewards"], data["episode_ends"], GAMMA)
    assert scaled["returns_to_go"] == pytest.approx(0.5 * unscaled)


def test_dataset_returns_to_go_follow_its_episodes(minari_root):
    """On a Minari dataset, through flatten_episodes: G = r at each episode's last transition (Pendulum's episodes
    end by the time limit), G_t = r_t + gamma G_{t+1} inside episodes."""
    data = iql.flatten_episodes(iql.load_dataset("local/pendulum/medium-replay-v0"))
    buffer, _, _, _ = iql.transition_buffer(data, True, True, torch.device("cpu"), gamma=GAMMA)
    g, r, ends = (buffer.data[k].double() for k in ("returns_to_go", "rewards", "terminals"))
    last = torch.as_tensor(data["episode_ends"]) > 0
    assert torch.allclose(g[last], r[last]) and not ends.any()
    inside = ~last[:-1]
    assert torch.allclose(g[:-1][inside], (r[:-1] + GAMMA * g[1:])[inside], rtol=1e-5, atol=1e-4)


def constant_explore(state):
    return torch.full((state.shape[0], 1), 0.5)


class NoTrainer:
    """The trainer contract's smallest case: nothing to learn, a state to pass through."""

    device = torch.device("cpu")

    def update(self, batch, step):
        return {}

    def state_dict(self):
        return {"weights": torch.arange(3.0)}

    def load_state_dict(self, state):
        assert torch.equal(state["weights"], torch.arange(3.0))


def fine_tuning(minari_root, **fields):
    config = SimpleNamespace(**{"max_steps": 10, "online_steps": 250, "online_ratio": 0.25, "utd": 2, "batch_size": 8,
                                "gamma": GAMMA, "seed": 0, "warmup_steps": 0, **fields})
    dataset = iql.load_dataset("local/pendulum/medium-replay-v0")
    data = iql.flatten_episodes(dataset)
    buffer, mean, std, _ = iql.transition_buffer(data, True, False, torch.device("cpu"), gamma=GAMMA)
    return iql.FineTuning(config, dataset, NoTrainer(), buffer, constant_explore, mean, std, 0.5)


def test_one_episode_as_the_dataset_holds_them():
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    mean, std = torch.zeros(3), torch.ones(3)
    episode = iql.collect_episode(env, constant_explore, mean, std, seed=3, max_length=500)
    assert len(episode["rewards"]) == 200 and episode["episode_ends"].tolist() == [0.0] * 199 + [1.0]
    assert not episode["terminals"].any() and (episode["actions"] == 0.5).all()  # a time limit is no terminal
    assert np.array_equal(episode["observations"][1:], episode["next_observations"][:-1])
    again = iql.collect_episode(env, constant_explore, mean, std, seed=3, max_length=50)  # the budget's cut
    assert len(again["rewards"]) == 50 and again["episode_ends"][-1] == 1.0
    assert np.array_equal(again["observations"], episode["observations"][:50])  # the seed fixes the episode


def arrivals(tuning) -> list[tuple[int, int]]:
    """Runs the schedule of fine_tuning (10 offline updates) to its end: (online update, buffer size) at each episode's
    arrival; at every step env_steps is the buffer's size and the phase follows the step."""
    found = []
    for step in range(1, tuning.steps + 1):
        before = tuning.online_buffer.size
        tuning.periodic(step)
        if tuning.online_buffer.size != before:
            found.append((step - 10, tuning.online_buffer.size))
        assert tuning.counters() == {"env_steps": tuning.online_buffer.size}
        assert tuning.online == (step > 10)
    return found


def test_episodes_arrive_as_the_updates_use_up_their_steps(minari_root):
    """utd 2 and a budget of 250 steps: the 200-step episode comes before online update 1, the remaining 50 (cut by the
    budget) before update 401; 500 online updates in all, then nothing more is collected."""
    tuning = fine_tuning(minari_root)
    assert tuning.steps == 10 + 250 * 2
    assert arrivals(tuning) == [(1, 200), (401, 250)] and tuning.episodes == 2
    ends = tuning.online_buffer.data["returns_to_go"][[199, 249]]
    assert torch.equal(ends, tuning.online_buffer.data["rewards"][[199, 249]])  # G = r where an episode ends
    assert torch.allclose(tuning.online_buffer.data["rewards"][:200], 0.5 * torch.as_tensor(
        iql.collect_episode(tuning.env, constant_explore, torch.as_tensor(tuning.mean), torch.as_tensor(tuning.std),
                            tuning.seed, 200)["rewards"]))  # the dataset's reward scale


def test_warmup_collects_uniform_random_steps_before_the_first_update(minari_root):
    """warmup_steps 300 of a 450-step budget at utd 2: the random episodes (200, then 100 cut at the warm-up's end)
    arrive before online update 1, the policy's 150 steps before update 1 as well; 300 online updates in all."""
    tuning = fine_tuning(minari_root, online_steps=450, warmup_steps=300)
    assert tuning.steps == 10 + (450 - 300) * 2
    assert arrivals(tuning) == [(1, 450)] and tuning.episodes == 3
    actions = tuning.online_buffer.data["actions"]
    assert not (actions[:300] == 0.5).any() and (actions[:300].abs() <= 2.0).all()  # Unif([-2, 2]), Pendulum's
    assert (actions[300:] == 0.5).all()  # then the policy's (constant_explore)
    again = fine_tuning(minari_root, online_steps=450, warmup_steps=300)
    again.periodic(11)
    assert torch.equal(again.online_buffer.data["actions"][:300], actions[:300])  # seeded: a resume draws the same


@pytest.mark.parametrize("module", [iql, cql, td3_bc])
def test_warmup_longer_than_the_online_budget_is_one_sentence(module):
    with pytest.raises(SystemExit, match=r"^error: warmup_steps must be in \[0, 250\], got 300\.$"):
        module.TrainConfig(online_steps=250, warmup_steps=300)


def test_mixed_batch_takes_online_ratio_from_the_online_episodes(minari_root):
    tuning = fine_tuning(minari_root)
    tuning.periodic(5)
    assert tuning.sample()["rewards"].shape == (8,) and tuning.online_buffer.size == 0  # offline: the dataset only
    tuning.periodic(11)
    batch = tuning.sample()
    assert set(batch) == set(tuning.buffer.data) and all(len(v) == 8 for v in batch.values())
    online_actions = batch["actions"][-2:]  # round(0.25 * 8) = 2 rows, after the dataset's 6
    assert (online_actions == 0.5).all() and not (batch["actions"][:6] == 0.5).all()


def test_checkpoint_holds_the_online_episodes_and_resumes_the_schedule(minari_root):
    tuning = fine_tuning(minari_root, online_steps=5000)
    for step in range(1, 12):
        tuning.periodic(step)
    saved = io.BytesIO()
    torch.save(tuning.state_dict(), saved)
    assert len(saved.getvalue()) < 40_000  # the 200 transitions (8 kB), not the room for 5000 (200 kB)
    saved.seek(0)
    resumed = fine_tuning(minari_root, online_steps=5000)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    assert resumed.episodes == 1 and resumed.online_buffer.size == 200
    for k, v in tuning.online_buffer.data.items():
        assert torch.equal(v, resumed.online_buffer.data[k]), k
    resumed.periodic(12)
    torch.manual_seed(0)
    expected = tuning.sample()
    torch.manual_seed(0)
    got = resumed.sample()
    assert all(torch.equal(v, got[k]) for k, v in expected.items())


@pytest.mark.parametrize("algo", ["iql", "cql", "td3_bc"])
def test_an_offline_run_never_enters_the_online_block(algo, minari_root, tmp_path, monkeypatch):
    module = {"iql": iql, "cql": cql, "td3_bc": td3_bc}[algo]

    def refuse(*args, **kwargs):
        raise AssertionError("an offline run built the online block")

    monkeypatch.setattr(module, "FineTuning", refuse)
    config = module.TrainConfig(dataset_id="local/pendulum/medium-replay-v0", max_steps=4, eval_every=4, eval_episodes=1,
                                checkpoints_path=str(tmp_path / "run"), logging="disabled", device="cpu", hidden_dim=16,
                                **({"bc_steps": 2, "n_hidden": 1, "num_sampled_actions": 2} if algo == "cql" else {}))
    assert "eval/return" in module.train(config)
    assert "online" not in torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["trainer"]


def test_an_environment_that_cannot_be_recovered_is_one_sentence():
    class NoEnvironment:
        spec = SimpleNamespace(dataset_id="local/none/medium-v0")

        def recover_environment(self):
            raise ValueError("the dataset has no environment spec")

    with pytest.raises(SystemExit, match="^error: online_steps needs the environment of dataset 'local/none/medium-v0', "
                                         "which cannot be recovered \\(the dataset has no environment spec\\)"):
        iql.training_environment(NoEnvironment())


def test_iql_explores_with_its_gaussian_clipped_to_the_bounds():
    torch.manual_seed(0)
    actor = iql.GaussianPolicy(3, 2, 8, max_action=1.0)
    with torch.no_grad():
        actor.log_std.fill_(1.0)
    states = torch.zeros(4000, 3)
    actions = actor.sample(states)
    assert actions.abs().max() <= 1.0 and (actions.abs() == 1.0).any()  # std e: many draws are clipped
    assert not torch.equal(actions[0], actions[1])


def test_td3_bc_explores_around_its_deterministic_action():
    torch.manual_seed(0)
    actor = td3_bc.Actor(3, 2, 8, max_action=2.0, sigma=0.1)
    states = torch.zeros(4000, 3)
    with torch.no_grad():
        noise = actor.sample(states) - actor(states)
        actor.sigma = 5.0
        widest = actor.sample(states)
    assert abs(float(noise.std()) - 0.2) < 0.01  # sigma = 0.1 max_action
    assert float(widest.abs().max()) == 2.0  # clipped to the bounds


# The same tiny budgets as tests/test_scripts.py; cql with its small networks and a short warm start.
SMALL = {"iql": ["--hidden_dim", "64"], "td3_bc": ["--hidden_dim", "64"], "awac": ["--hidden_dim", "64"],
         "cql": ["--hidden_dim", "64", "--n_hidden", "2", "--num_sampled_actions", "4", "--bc_steps", "20",
                 "--calibrated", "true"]}
ONLINE = ["--dataset_id", "local/pendulum/medium-replay-v0", "--max_steps", "60", "--online_steps", "250",
          "--eval_every", "100"]


@pytest.mark.parametrize("algo", ["iql", "cql", "td3_bc", "awac"])
def test_online_run_evaluates_logs_env_steps_and_resumes_bit_identically(algo, minari_root, tmp_path):
    """60 offline updates, then 250 environment steps (a 200-step episode and 50 cut by the budget); the split run
    stops at update 150, in the middle of the first online episode's updates, and the same command resumes it."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(algo, *ONLINE, *SMALL[algo], "--checkpoints_path", str(straight), cwd=tmp_path)
    stopped = run(algo, *ONLINE, *SMALL[algo], "--checkpoints_path", str(split), "--stop_after", "150", cwd=tmp_path)
    assert "stopped at update 150 of 310" in stopped.stdout
    run(algo, *ONLINE, *SMALL[algo], "--checkpoints_path", str(split), cwd=tmp_path)

    log = read_log(straight)
    evaluations = [(r["step"], r["env_steps"]) for r in log if "eval/return" in r]
    assert evaluations == [(60, 0), (100, 200), (200, 200), (300, 250), (310, 250)]  # the switch, eval_every, the end
    assert all("env_steps" in r for r in log)
    drop = ("wall_time",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_log(split)] == \
           [{k: v for k, v in r.items() if k not in drop} for r in log]
    (step_a, state_a), (step_b, state_b) = final_weights(straight), final_weights(split)
    assert step_a == step_b == 310 and state_a["online"]["episodes"] == 2
    b_tensors = dict(tensors_of(state_b))
    for path, tensor in tensors_of(state_a):
        assert torch.equal(tensor, b_tensors[path]), path
    assert ("returns_to_go" in state_a["online"]["buffer"]) == (algo == "cql")
    assert json.loads((straight / "finished.json").read_text())["step"] == 310


def test_a_resume_under_other_online_fields_is_refused_and_scratch_runs(minari_root, tmp_path):
    run_dir = tmp_path / "run"
    run("iql", *ONLINE, *SMALL["iql"], "--checkpoints_path", str(run_dir), "--stop_after", "70", cwd=tmp_path)
    refused = run("iql", *ONLINE, *SMALL["iql"], "--checkpoints_path", str(run_dir), "--online_ratio", "1.0",
                  check=False, cwd=tmp_path)
    assert refused.returncode != 0 and "online_ratio: 0.5 there, 1.0 now" in refused.stderr
    scratch = tmp_path / "scratch"  # no offline phase, no offline batch: the online learner from scratch
    run("cql", "--dataset_id", "local/pendulum/medium-replay-v0", "--max_steps", "0", "--online_steps", "300",
        "--warmup_steps", "100", "--online_ratio", "1", "--cql_alpha", "0", "--bc_steps", "0", "--eval_every", "100",
        *SMALL["cql"][:6], "--checkpoints_path", str(scratch), cwd=tmp_path)
    # 100 random steps with no update, then the policy's 200-step episode before update 1: 200 updates in all
    assert [(r["step"], r["env_steps"]) for r in read_log(scratch) if "eval/return" in r] == [(100, 300), (200, 300)]


def test_the_console_marks_the_switch_and_counts_the_online_phase_in_environment_steps(minari_root, capsys):
    """A line at the switch, then the online phase's own progress in environment steps (every tenth of online_steps
    crossed); a resume after the switch says where the online phase stands."""
    tuning = fine_tuning(minari_root)
    for step in range(1, tuning.steps + 1):
        tuning.periodic(step)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["update 10: offline phase done, online phase begins: 250 environment steps (0 of them random "
                     "warm-up), 2 update(s) per step, 500 online updates",
                     "online: 200 of 250 environment steps (80%), 1 episodes",
                     "online: 250 of 250 environment steps (100%), 2 episodes"]
    resumed = fine_tuning(minari_root)
    resumed.load_state_dict(tuning.state_dict())
    resumed.periodic(300)
    assert capsys.readouterr().out.splitlines() == ["update 299: online phase resumes at environment step 250 of 250"]
