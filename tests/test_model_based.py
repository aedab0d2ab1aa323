"""MOPO's and COMBO's dynamics model (the shared dynamics block, imported from mopo.py), the MOPO penalty
and COMBO's conservative gap, against hand computations and toy systems; rollouts through the trainers'
periodic hook; and the trainer contract of both (update(batch, step) compiled = eager, exported policy,
checkpoint state loadable with weights_only=True)."""

import dataclasses
import math
import time
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import combo
import mopo


def toy_model(state_dim=2, action_dim=1, hidden=8, n_models=3, n_elites=2, seed=0):
    torch.manual_seed(seed)
    model = mopo.EnsembleDynamics(state_dim, action_dim, hidden, n_models, n_elites)
    with torch.no_grad():
        model.input_mean.copy_(torch.randn(state_dim + action_dim))
        model.input_std.copy_(torch.rand(state_dim + action_dim) + 0.5)
    return model


def test_vectorized_linear_equals_members_one_by_one():
    torch.manual_seed(0)
    layer = mopo.VectorizedLinear(3, 4, n=5)
    x = torch.randn(5, 6, 3)
    for i in range(5):
        expected = torch.nn.functional.linear(x[i], layer.weight[i].T, layer.bias[i, 0])
        assert torch.allclose(layer(x)[i], expected, atol=1e-6)


def test_ensemble_model_equals_members_one_by_one():
    model = toy_model()
    inputs = torch.randn(4, 3)
    mean, logvar = model(inputs)  # one batched matmul per layer for all members
    assert mean.shape == logvar.shape == (3, 4, 3)
    for i in range(3):
        x = (inputs - model.input_mean) / model.input_std
        for layer in model.layers[:-1]:
            x = torch.nn.functional.silu(x @ layer.weight[i] + layer.bias[i])
        out = x @ model.layers[-1].weight[i] + model.layers[-1].bias[i]
        assert torch.allclose(mean[i], out[:, :3], atol=1e-5)
        expected_logvar = mopo.bounded_logvar(out[:, 3:], model.min_logvar, model.max_logvar)
        assert torch.allclose(logvar[i], expected_logvar, atol=1e-5)
    # A [N, B, in] input gives member i its own batch.
    per_member = torch.randn(3, 4, 3)
    assert torch.allclose(model(per_member)[0][1], model(per_member[1])[0][1], atol=1e-6)


def softplus(x):
    return math.log1p(math.exp(x))


def test_gaussian_nll_with_bounded_logvar_by_hand():
    lo, hi = torch.tensor([-10.0]), torch.tensor([0.5])
    raw = torch.tensor([2.0, -1.0, 50.0, -50.0])
    bounded = mopo.bounded_logvar(raw, lo, hi)
    by_hand = [-10 + softplus(0.5 - softplus(0.5 - r) + 10) for r in (2.0, -1.0)]
    assert bounded[:2].tolist() == pytest.approx(by_hand, rel=1e-5)
    assert bounded[2].item() == pytest.approx(0.5, abs=1e-4)  # far above the upper bound: clamped softly to it
    assert bounded[3].item() == pytest.approx(-10.0, abs=1e-4)  # far below the lower bound
    # NLL per member: mean over batch and dims of (mu - y)^2 exp(-logvar) + logvar.
    mean = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])  # [N=2, B=1, 2]
    logvar = torch.tensor([[[0.0, math.log(4.0)]], [[math.log(0.5), 0.0]]])
    target = torch.tensor([[[0.0, 0.0]]]).expand(2, 1, 2)
    nll = mopo.gaussian_nll(mean, logvar, target)
    member0 = ((1.0 + 0.0) + (4.0 / 4.0 + math.log(4.0))) / 2
    member1 = ((0.0 + math.log(0.5)) + (0.0 + 0.0)) / 2
    assert nll.tolist() == pytest.approx([member0, member1], rel=1e-6)


def test_dynamics_loss_adds_weight_decay_and_logvar_bound_penalty():
    model = toy_model()
    inputs, targets = torch.randn(3, 5, 3), torch.randn(3, 5, 3)
    mean, logvar = model(inputs)
    decay = sum(w * (layer.weight ** 2).sum() / 2 for w, layer in zip(mopo.MODEL_WEIGHT_DECAY, model.layers))
    expected = mopo.gaussian_nll(mean, logvar, targets).sum() + decay + 0.01 * (3 * 0.5 - 3 * -10.0)
    assert mopo.dynamics_loss(model, inputs, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mopo_penalty_on_toy_ensemble():
    # sigma of (r, s' - s) for N = 3 members and B = 2 pairs; u = max_i ||sigma_i||_2.
    sigma = torch.tensor([[[3.0, 4.0], [0.1, 0.1]],
                          [[1.0, 1.0], [6.0, 8.0]],
                          [[0.0, 2.0], [1.0, 0.0]]])
    u = mopo.model_uncertainty(torch.log(sigma.clamp(min=1e-12) ** 2))
    assert u.tolist() == pytest.approx([5.0, 10.0], rel=1e-5)
    reward = torch.tensor([1.0, -2.0])
    assert mopo.penalized_reward(reward, u, 0.5).tolist() == pytest.approx([1.0 - 2.5, -2.0 - 5.0], rel=1e-5)
    assert mopo.penalized_reward(reward, u, 0.0).tolist() == [1.0, -2.0]  # COMBO's rollouts


def constant_members(biases):
    """An ensemble whose member i predicts the constant mean biases[i] (zero output weights), tiny variance."""
    model = toy_model(n_models=len(biases), n_elites=2)
    with torch.no_grad():
        head = model.layers[-1]
        head.weight.zero_()
        head.bias.zero_()
        head.bias[:, 0, :3] = torch.tensor(biases)[:, None]
        head.bias[:, 0, 3:] = -30.0  # log-variance at its lower bound
    return model


def test_elites_are_the_members_with_the_lowest_holdout_error():
    model = constant_members([3.0, -0.5, 2.0, 0.2])
    inputs, targets = torch.randn(10, 3), torch.zeros(10, 3)
    # holdout MSE of member i is biases[i]^2: 9, 0.25, 4, 0.04 -> elites 3 then 1
    mean_elite_mse = mopo.choose_elites(model, inputs, targets)
    assert model.holdout_mse.tolist() == pytest.approx([9.0, 0.25, 4.0, 0.04], rel=1e-5)
    assert model.elites.tolist() == [3, 1]
    assert mean_elite_mse == pytest.approx((0.25 + 0.04) / 2, rel=1e-5)
    # Model steps sample only the elites: rewards are near 0.2 or -0.5 (sigma = exp(-5)), never 3 or 2.
    _, rewards, _ = model.step(torch.randn(500, 2), torch.randn(500, 1))
    near = [((rewards - b).abs() < 0.05).float().mean().item() for b in (3.0, -0.5, 2.0, 0.2)]
    assert near[0] == near[2] == 0.0 and near[1] + near[3] == 1.0 and min(near[1], near[3]) > 0.3


def hopper_observation():
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    env.close()
    return obs


def test_hopper_termination_on_real_observations():
    obs = hopper_observation()
    assert 1.2 < obs[0] < 1.3 and abs(obs[1]) < 0.01  # reset pose: z about 1.25, upright
    fallen, tilted, wild = obs.copy(), obs.copy(), obs.copy()
    fallen[0] = 0.6  # z below 0.7
    tilted[1] = 0.25  # torso angle beyond 0.2
    wild[7] = 150.0  # a state entry beyond 100
    states = torch.as_tensor(np.stack([obs, fallen, tilted, wild]))
    assert mopo.hopper_termination(states).tolist() == [False, True, True, True]


def test_hopper_termination_agrees_with_the_environment():
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=1)
    terminated, steps = False, 0
    while not terminated and steps < 500:  # a constant push makes the hopper fall
        obs, _, terminated, _, _ = env.step(np.array([1.0, -1.0, 1.0]))
        steps += 1
        assert bool(mopo.hopper_termination(torch.as_tensor(obs)[None])[0]) == terminated
    assert terminated
    env.close()


def test_termination_function_is_chosen_from_the_env_spec():
    def dataset(env_id):
        return types.SimpleNamespace(env_spec=gym.spec(env_id))

    assert mopo.termination_function("auto", dataset("Hopper-v5")) is mopo.hopper_termination
    assert mopo.termination_function("auto", dataset("Walker2d-v5")) is mopo.walker2d_termination
    assert mopo.termination_function("auto", dataset("Pendulum-v1")) is mopo.no_termination
    assert mopo.termination_function("none", dataset("Hopper-v5")) is mopo.no_termination
    with pytest.raises(SystemExit, match="no termination function is known for environment 'Ant-v5'"):
        mopo.termination_function("auto", dataset("Ant-v5"))
    with pytest.raises(SystemExit, match="not one of auto"):
        mopo.termination_function("cheetah", dataset("Pendulum-v1"))


def linear_system(n, rng):
    """Transitions of s' = A s + B a, r = w . s with s ~ N(0, I), a ~ Unif[-1, 1]."""
    a_matrix = np.array([[0.9, 0.2, 0.0], [-0.1, 0.8, 0.1], [0.0, 0.3, 0.7]], np.float32)
    b_matrix = np.array([[0.5], [0.0], [-0.4]], np.float32)
    s = rng.normal(size=(n, 3)).astype(np.float32)
    a = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    return {"observations": s, "actions": a, "next_observations": s @ a_matrix.T + a @ b_matrix.T,
            "rewards": s @ np.array([1.0, -1.0, 0.5], np.float32)}


def test_model_learns_a_linear_system_in_seconds():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    config = mopo.TrainConfig(model_max_epochs=30, model_hidden_dim=64)
    model = mopo.EnsembleDynamics(3, 1, config.model_hidden_dim, config.n_models, config.n_elites)
    start = time.time()
    mse, epochs = mopo.train_dynamics(model, linear_system(1000, rng), config)
    assert time.time() - start < 30
    # Targets (r, s' - s) have variance about 1; the elites fit them to a small fraction of it on unseen data.
    inputs, targets = mopo.model_data(linear_system(500, rng), torch.device("cpu"))
    with torch.no_grad():
        mean = model(inputs)[0][model.elites]
    assert mse < 0.01 and (mean - targets).pow(2).mean().item() < 0.01


def test_model_is_trained_once_then_reused(tmp_path):
    data = linear_system(300, np.random.default_rng(0))
    config = mopo.TrainConfig(checkpoints_path=str(tmp_path), model_max_epochs=1, n_models=3, n_elites=2)

    def model():
        return mopo.EnsembleDynamics(3, 1, 8, 3, 2)

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    trained = model()
    mopo.prepare_dynamics(config, trained, data, tmp_path)
    assert (tmp_path / "dynamics.pt").exists() and not same(trained, model())
    resumed = model()  # resume (the default) with a saved model and no checkpoint yet: loaded, not retrained
    mopo.prepare_dynamics(config, resumed, data, tmp_path)
    assert same(trained, resumed)
    elsewhere = model()
    reuse = dataclasses.replace(config, resume=False, checkpoints_path=str(tmp_path / "other"),
                                dynamics_path=str(tmp_path / "dynamics.pt"))
    mopo.prepare_dynamics(reuse, elsewhere, data, tmp_path / "other")
    assert same(trained, elsewhere) and not (tmp_path / "other" / "dynamics.pt").exists()
    with pytest.raises(SystemExit, match="missing.pt does not exist"):
        mopo.prepare_dynamics(dataclasses.replace(reuse, dynamics_path=str(tmp_path / "missing.pt")), model(), data,
                              tmp_path / "other")
    with pytest.raises(SystemExit, match="not a dynamics model of this dataset"):
        mopo.prepare_dynamics(reuse, mopo.EnsembleDynamics(3, 1, 16, 3, 2), data, tmp_path / "other")


def test_interrupted_model_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setattr(mopo, "MODEL_STATE_EVERY_SECONDS", 0.0)  # save after every epoch
    data = linear_system(300, np.random.default_rng(0))
    config = mopo.TrainConfig(model_max_epochs=4, model_patience=100, n_models=3, n_elites=2)
    state = str(tmp_path / "dynamics_training.pt")

    def trained(seed, epochs, state_path):
        torch.manual_seed(seed)
        model = mopo.EnsembleDynamics(3, 1, 8, 3, 2)
        result = mopo.train_dynamics(model, data, dataclasses.replace(config, model_max_epochs=epochs), state_path)
        return model, result

    straight, straight_result = trained(0, 4, None)
    trained(0, 2, state)  # stops after epoch 2 with its state saved
    resumed, resumed_result = trained(1, 4, state)  # another seed: everything must come from the saved state
    assert resumed_result == straight_result
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    Path(state).write_bytes(b"not a state")
    with pytest.raises(SystemExit, match="is not the training state of this dynamics model"):
        trained(0, 4, state)


def test_model_training_state_is_removed_once_the_model_is_saved(tmp_path):
    data = linear_system(300, np.random.default_rng(0))
    config = mopo.TrainConfig(checkpoints_path=str(tmp_path), model_max_epochs=1, n_models=3, n_elites=2,
                              resume=False)
    (tmp_path / "dynamics_training.pt").write_bytes(b"a stale state that resume=False must not read")
    mopo.prepare_dynamics(config, mopo.EnsembleDynamics(3, 1, 8, 3, 2), data, tmp_path)
    assert (tmp_path / "dynamics.pt").exists() and not (tmp_path / "dynamics_training.pt").exists()


def test_model_buffer_is_a_ring_that_skips_invalid_rows():
    buffer = mopo.ModelBuffer(capacity=5, state_dim=1, action_dim=1)

    def rows(values):
        v = torch.tensor(values, dtype=torch.float32)
        return {"observations": v[:, None], "actions": v[:, None], "rewards": v, "next_observations": v[:, None],
                "terminals": torch.zeros(len(v))}

    buffer.add(rows([1.0, 2.0, 3.0, 4.0]), torch.tensor([True, False, True, True]))
    assert buffer.rewards[:5].tolist() == [1.0, 3.0, 4.0, 0.0, 0.0] and buffer.filled.item() == 3
    buffer.add(rows([5.0, 6.0, 7.0]), torch.tensor([True, True, True]))  # wraps: 7 overwrites the oldest
    assert buffer.rewards[:5].tolist() == [7.0, 3.0, 4.0, 5.0, 6.0]
    assert buffer.filled.item() == 5 and buffer.position.item() == 1 and buffer.rewards[5].item() == 0.0
    assert set(buffer.sample(200)["rewards"].tolist()) == {3.0, 4.0, 5.0, 6.0, 7.0}


class CountingModel:
    """A fake model: s' = s + 1, r = s, log sigma^2 = 0 for 2 members; s' is inf from s >= diverge_at on."""

    def __init__(self, diverge_at=math.inf):
        self.diverge_at = diverge_at

    def step(self, states, actions):
        next_states = torch.where(states >= self.diverge_at, math.inf, states + 1)
        return next_states, states[:, 0], torch.zeros(2, len(states), 2)


def test_rollout_marks_the_steps_after_a_termination_invalid():
    starts = torch.tensor([[0.0], [2.0]])
    transitions, valid = mopo.model_rollout(CountingModel(), lambda s: torch.zeros(len(s), 1), starts, horizon=3,
                                            termination=lambda s: s[:, 0] >= 3.0)
    # step-major order: (row 0, row 1) for steps 1, 2, 3; row 1 terminates at its first step (s' = 3)
    assert transitions["observations"][:, 0].tolist() == [0.0, 2.0, 1.0, 3.0, 2.0, 4.0]
    assert transitions["terminals"].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert valid.tolist() == [True, True, True, False, True, False]
    assert "uncertainty" not in transitions  # computed only for a method that asks for it


def test_rollout_ends_where_the_model_diverges_in_any_environment():
    starts = torch.tensor([[0.0], [5.0]])
    transitions, valid = mopo.model_rollout(CountingModel(diverge_at=1.0), lambda s: torch.zeros(len(s), 1), starts,
                                            horizon=3, termination=mopo.no_termination,
                                            uncertainty=lambda logvar: logvar.sum((0, 2)) + 7.0)
    # row 0: 0 -> 1 (kept), then 1 -> inf (dropped, the rollout ends); row 1: 5 -> inf at once
    assert valid.tolist() == [True, False, False, False, False, False]
    assert torch.isfinite(transitions["observations"]).all()  # ended rows step on from their last finite state
    assert transitions["uncertainty"].tolist() == [7.0] * 6
    buffer = mopo.ModelBuffer(capacity=10, state_dim=1, action_dim=1)
    buffer.add(transitions, valid)
    assert buffer.filled.item() == 1 and torch.isfinite(buffer.next_observations).all()


def constant_reward_model(trainer):
    """Every member predicts r = 1, s' = s, with the smallest variance."""
    with torch.no_grad():
        head = trainer.dynamics.layers[-1]
        head.weight.zero_()
        head.bias.zero_()
        head.bias[:, 0, 0] = 1.0
        head.bias[:, 0, 3:] = -30.0


def ones_dataset(n=10, state_dim=2):
    data = {"observations": np.ones((n, state_dim), np.float32), "actions": np.zeros((n, 1), np.float32),
            "rewards": np.full(n, 7.0, np.float32), "next_observations": np.ones((n, state_dim), np.float32),
            "terminals": np.zeros(n, np.float32)}
    return mopo.DeviceBuffer(data, torch.device("cpu"))


def model_rollouts(module, buffer, config, reward_scale=1.0, state_dim=2):
    return module.ModelRollouts(buffer, np.zeros(state_dim), np.ones(state_dim), reward_scale, module.no_termination,
                                config.rollout_batch_size, config.rollout_length)


def test_rollouts_happen_every_rollout_every_updates_with_penalized_rewards():
    config = mopo.TrainConfig(batch_size=20, real_ratio=0.25, rollout_batch_size=4, rollout_length=2, rollout_every=3,
                              retain_rollouts=5, penalty_coef=100.0, n_models=3, n_elites=2, model_hidden_dim=8,
                              hidden_dim=8)
    buffer = ones_dataset()
    trainer = mopo.Trainer(2, 1, 1.0, config, torch.device("cpu"), model_rollouts(mopo, buffer, config, 2.0))
    constant_reward_model(trainer)
    filled = []
    for step in range(1, 8):
        trainer.periodic(step)
        batch = mopo.mixed_batch(buffer, trainer.model_buffer, config.batch_size, config.real_ratio)
        filled.append(trainer.model_buffer.filled.item())
    assert filled == [8, 8, 8, 16, 16, 16, 24]  # rollouts before updates 1, 4 and 7
    assert batch["rewards"][:5].tolist() == [7.0] * 5  # int(20 * 0.25) dataset rows first
    u = math.sqrt(3) * math.exp(-5.0)  # ||sigma|| of (r, s' - s) at log sigma^2 = min_logvar = -10
    stored = trainer.model_buffer.rewards[:24]
    assert torch.allclose(stored, torch.full((24,), 2.0 * (1.0 - 100.0 * u)), atol=0.1)  # scale * (r - lambda u)
    assert torch.allclose(trainer.model_buffer.next_observations[:24], torch.ones(24, 2), atol=0.05)
    assert trainer.rollout_uncertainty.item() == pytest.approx(u, rel=0.05)
    assert trainer.model_buffer.added.item() == 8  # every rollout ran its h = 2 steps from its 4 start states


def test_combo_rollouts_ask_for_no_uncertainty_and_keep_the_reward():
    config = combo.TrainConfig(rollout_batch_size=4, rollout_length=2, rollout_every=3, n_models=3, n_elites=2,
                               model_hidden_dim=8, hidden_dim=8, n_hidden=1)
    rollouts = model_rollouts(combo, ones_dataset(), config)
    asked = []
    original = rollouts.__call__

    class Spy:
        n_rollouts, buffer_units = rollouts.n_rollouts, rollouts.buffer_units

        def __call__(self, model, actor, uncertainty=None):
            asked.append(uncertainty)
            return original(model, actor, uncertainty)

    trainer = combo.Trainer(2, 1, 1.0, config, torch.device("cpu"), Spy())
    constant_reward_model(trainer)
    trainer.periodic(1)
    assert asked == [None]
    assert torch.allclose(trainer.model_buffer.rewards[:8], torch.ones(8), atol=0.05)  # r, no penalty
    assert trainer.model_buffer.added.item() == 8  # h = 2 steps from 4 start states


def test_combo_gap_pushes_down_model_states_and_up_dataset_pairs():
    logsumexp_model = torch.tensor([[1.0, 3.0, 5.0], [0.0, 0.0, 3.0]])  # [critics, model states]
    q_data = torch.tensor([[2.0, 4.0], [1.0, 1.0]])  # [critics, dataset pairs]: another batch, another size
    assert combo.conservative_gap(logsumexp_model, q_data).tolist() == pytest.approx([3.0 - 3.0, 1.0 - 1.0])
    q_random, q_policy, q_next = torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.tensor([[2.0]])
    lse = combo.importance_sampled_logsumexp(q_random, q_policy, q_next, math.log(0.25), torch.tensor([[0.0]]),
                                             torch.tensor([[math.log(2.0)]]))
    by_hand = math.log(math.exp(0 - math.log(0.25)) + math.exp(1.0) + math.exp(2.0 - math.log(2.0)))
    assert lse.item() == pytest.approx(by_hand, rel=1e-6)


def test_combo_update_pushes_q_down_on_model_rows_only():
    config = combo.TrainConfig(batch_size=8, real_ratio=0.5, hidden_dim=16, n_hidden=2, cql_alpha=1.0,
                               num_sampled_actions=2, critic_lr=1e-2, rollout_batch_size=4, n_models=3, n_elites=2,
                               model_hidden_dim=8)
    torch.manual_seed(0)
    trainer = combo.Trainer(2, 1, 1.0, config, torch.device("cpu"), model_rollouts(combo, ones_dataset(), config))
    data_states, model_states = torch.zeros(4, 2), torch.ones(4, 2) * 3.0
    batch = {"observations": torch.cat([data_states, model_states]), "actions": torch.zeros(8, 1),
             "rewards": torch.zeros(8), "next_observations": torch.cat([data_states, model_states]),
             "terminals": torch.ones(8)}  # terminal, zero reward: only the conservative term moves Q off 0
    for step in range(1, 51):
        trainer.update(batch, step)
    with torch.no_grad():
        q_data = trainer.critic(data_states, torch.zeros(4, 1)).mean()
        q_model = trainer.critic(model_states, torch.zeros(4, 1)).mean()
    assert q_data > q_model + 1.0


def make_trainer(module, **overrides):
    config = module.TrainConfig(device="cpu", batch_size=16, hidden_dim=16, n_hidden=2, n_models=3, n_elites=2,
                                model_hidden_dim=8, rollout_batch_size=4, rollout_length=2, **overrides)
    return module.Trainer(2, 1, 1.0, config, torch.device("cpu"), model_rollouts(module, ones_dataset(), config))


def random_batch(batch_size=16, state_dim=2, action_dim=1):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


@pytest.mark.parametrize("module", [mopo, combo], ids=["mopo", "combo"])
def test_checkpoint_state_round_trips_with_the_model_buffer(module, tmp_path):
    from conftest import tensors_of

    a, b = make_trainer(module), make_trainer(module)
    a.periodic(1)  # D_model filled: the checkpoint must carry it
    a.update(random_batch(), 1)
    torch.save(a.state_dict(), tmp_path / "state.pt")  # tensors and plain values only: loadable with weights_only
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert b.model_buffer.filled.item() == a.model_buffer.filled.item() > 0
    b_state = dict(tensors_of(b.state_dict()))
    for path, tensor in tensors_of(a.state_dict()):
        assert torch.equal(tensor, b_state[path]), path


# Model files under the run's protection (issue 45, item 3): the model is trained or loaded by fit's call of
# trainer.prepare, after the run directory is locked, an old run moved aside, and run.json checked.
MOPO_SMALL = ["--dataset_id", "local/pendulum/medium-replay-v0", "--model_max_epochs", "2", "--rollout_batch_size",
              "50", "--hidden_dim", "32", "--model_hidden_dim", "16", "--max_steps", "4", "--eval_every", "4"]


def resume_false_keeps_the_old_model_in_the_moved_folder(run_dir):
    from test_scripts import run

    run("mopo", *MOPO_SMALL, "--checkpoints_path", str(run_dir))
    old = (run_dir / "dynamics.pt").read_bytes()
    run("mopo", *MOPO_SMALL, "--checkpoints_path", str(run_dir), "--resume", "false", "--model_lr", "3e-3")
    [aside] = run_dir.parent.glob(f"{run_dir.name}.replaced-*")
    assert (aside / "dynamics.pt").read_bytes() == old and (run_dir / "dynamics.pt").read_bytes() != old


def a_refused_second_run_writes_no_model(run_dir):
    from test_scripts import run_process

    lock = mopo.lock_run(run_dir)  # a first run writing the directory, in this process; the second in its own
    result = run_process("mopo", *MOPO_SMALL, "--checkpoints_path", str(run_dir), check=False)
    lock.close()
    assert result.returncode != 0 and "another run is writing" in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


def interrupted_model_training_resumes_only_under_the_same_model_fields(run_dir):
    import os
    import signal
    import subprocess
    import sys

    from test_scripts import ONE_THREAD, ROOT, run_process

    longer = [*MOPO_SMALL, "--checkpoints_path", str(run_dir), "--model_max_epochs", "100000", "--model_patience",
              "100000", "--logging", "disabled", "--device", "cpu"]
    with open(run_dir.parent / "stderr.txt", "w") as stderr:
        child = subprocess.Popen([sys.executable, str(ROOT / "algorithms" / "mopo.py"), *longer], stderr=stderr,
                                 stdout=subprocess.DEVNULL, env={**os.environ, **ONE_THREAD})
        deadline = time.time() + 120
        while "dynamics model" not in (run_dir.parent / "stderr.txt").read_text() and time.time() < deadline:
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)  # kill -9 in the middle of the model's training
        child.wait()
    assert not (run_dir / "dynamics.pt").exists()
    changed = run_process("mopo", *longer, "--model_lr", "3e-3", check=False)  # what the killed process left
    assert changed.returncode != 0 and "model_lr: 0.001 there, 0.003 now" in changed.stderr
    assert not (run_dir / "dynamics.pt").exists()


MODEL_FILE_FAULTS = {f.__name__: f for f in (resume_false_keeps_the_old_model_in_the_moved_folder,
                                            a_refused_second_run_writes_no_model,
                                            interrupted_model_training_resumes_only_under_the_same_model_fields)}


@pytest.mark.parametrize("case", MODEL_FILE_FAULTS)
def test_model_files_live_under_the_run_lock(case, minari_root, tmp_path):
    MODEL_FILE_FAULTS[case](tmp_path / "run")
