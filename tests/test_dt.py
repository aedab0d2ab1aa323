"""Decision Transformer: returns-to-go, left-padded windows, causality of the transformer, the
masked loss, the update against the authors' AdamW + warm-up + clipping loop, the return-to-go
bookkeeping of the evaluation rollout, the trainer's contract (compiled update without a recompile
per learning rate, checkpoint state and exact continuation) and the exported policy.pt2, on tiny
hand-made data."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import dt


def small_config(**kw):
    fields = dict(context_len=4, embed_dim=16, n_layers=2, n_heads=2, max_ep_len=50, rtg_scale=1.0)
    return dt.TrainConfig(**{**fields, **kw})


def toy_data(lengths):
    """Flat arrays of trajectories of the given lengths; state i is [i, -i], reward i is i + 1."""
    n = sum(lengths)
    ends = np.zeros(n, np.float32)
    ends[np.cumsum(lengths) - 1] = 1.0
    steps = np.arange(n, dtype=np.float32)
    return {"observations": np.stack([steps, -steps], 1), "actions": (steps / 100)[:, None],
            "rewards": steps + 1, "episode_ends": ends}


def test_returns_to_go_of_two_trajectories():
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 20.0], np.float32)
    ends = np.array([0, 0, 1, 0, 1], np.float32)
    np.testing.assert_array_equal(dt.returns_to_go(rewards, ends), [6.0, 5.0, 3.0, 30.0, 20.0])


def make_buffer(lengths, **kw):
    data = toy_data(lengths)
    mean, std = np.zeros(2, np.float32), np.ones(2, np.float32)
    return dt.SequenceBuffer(data, mean, std, small_config(**kw), torch.device("cpu"))


def test_short_trajectory_is_left_padded_and_masked():
    buffer = make_buffer([3, 7], context_len=5)  # the first trajectory is shorter than K
    batch = buffer.windows(torch.tensor([0, 1, 3, 9]))
    assert batch["mask"].tolist() == [[False, False, True, True, True], [False, False, False, True, True],
                                      [True] * 5, [False, False, False, False, True]]
    assert batch["states"][:, :, 0].tolist() == [[0, 0, 0, 1, 2], [0, 0, 0, 1, 2], [3, 4, 5, 6, 7],
                                                 [0, 0, 0, 0, 9]]
    assert batch["timesteps"].tolist() == [[0, 0, 0, 1, 2], [0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 6]]
    # rewards 1, 2, 3 | 4, ..., 10: R_hat = 6, 5, 3 in the first trajectory, 49, 45, ... in the second
    assert batch["returns_to_go"].squeeze(-1).tolist() == [[0, 0, 6, 5, 3], [0, 0, 0, 5, 3], [49, 45, 40, 34, 27],
                                                           [0, 0, 0, 0, 10]]
    assert batch["actions"][3].squeeze(-1).tolist() == pytest.approx([0, 0, 0, 0, 0.09])


def test_sampled_windows_stay_inside_one_trajectory():
    buffer = make_buffer([3, 7, 2], context_len=5)
    batch = buffer.sample(512)
    mask, t = batch["mask"], batch["timesteps"]
    assert torch.equal(mask, mask.cummax(1).values)  # padding only on the left
    steps = batch["states"][:, :, 0]
    consecutive = mask[:, 1:] & mask[:, :-1]
    assert torch.all((steps[:, 1:] - steps[:, :-1])[consecutive] == 1)
    assert torch.all((t[:, 1:] - t[:, :-1])[consecutive] == 1)  # a window never crosses a trajectory end
    assert torch.all(mask[:, -1])


def test_attention_mask_is_causal_and_hides_padding():
    allowed = dt.attention_mask(torch.tensor([[False, True]]))[0, 0].int()
    expected = [[1, 0, 0, 0, 0, 0],  # padded R_hat_1, s_1, a_1: only themselves
                [0, 1, 0, 0, 0, 0],
                [0, 0, 1, 0, 0, 0],
                [0, 0, 0, 1, 0, 0],  # R_hat_2
                [0, 0, 0, 1, 1, 0],  # s_2 sees R_hat_2 and itself, not a_2
                [0, 0, 0, 1, 1, 1]]
    assert allowed.tolist() == expected


def random_inputs(batch=3, K=4, state_dim=3, action_dim=2):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, K, 1, generator=g), torch.randn(batch, K, state_dim, generator=g),
            torch.rand(batch, K, action_dim, generator=g) * 2 - 1, torch.randint(0, 50, (batch, K), generator=g),
            torch.ones(batch, K, dtype=torch.bool)]


def make_model():
    torch.manual_seed(0)
    return dt.DecisionTransformer(3, 2, 2.0, embed_dim=16, n_layers=2, n_heads=2, dropout=0.1, max_ep_len=50,
                                 timestep_embedding_std=0.02).eval()


def test_timestep_embedding_is_the_seeds_draw_scaled_to_its_std():
    """GPT-2's std 0.02 by default; std 1.0 is the authors' nn.Embedding N(0, 1), the same draw unscaled,
    and every other weight is the same for the same seed (the dt_init1 runs stay reproducible)."""
    def model(std):
        torch.manual_seed(0)
        return dt.DecisionTransformer(3, 2, 2.0, embed_dim=16, n_layers=2, n_heads=2, dropout=0.1, max_ep_len=500,
                                      timestep_embedding_std=std)
    gpt2, authors = model(0.02), model(1.0)
    assert authors.embed_timestep.weight.std().item() == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(gpt2.embed_timestep.weight, 0.02 * authors.embed_timestep.weight)
    for (name, a), (_, b) in zip(gpt2.named_parameters(), authors.named_parameters()):
        if name != "embed_timestep.weight":
            torch.testing.assert_close(a, b)


@torch.no_grad()
def test_a_later_token_never_changes_an_earlier_action():
    model, K = make_model(), 4
    inputs = random_inputs()
    before = model(*inputs)
    for t in range(K):
        changed = [x.clone() for x in inputs]
        changed[2][:, t:] += 0.5  # a_t and every later action
        changed[0][:, t + 1:] -= 3.0  # every later return-to-go, state and timestep
        changed[1][:, t + 1:] += 1.0
        changed[3][:, t + 1:] = (changed[3][:, t + 1:] + 7) % 50
        after = model(*changed)
        assert torch.equal(after[:, :t + 1], before[:, :t + 1]), t
        if t + 1 < K:
            assert not torch.equal(after[:, t + 1], before[:, t + 1])  # the test can see a change


@torch.no_grad()
def test_an_action_depends_on_its_own_return_to_go_and_state():
    model = make_model()
    inputs = random_inputs()
    before = model(*inputs)
    for i in (0, 1):  # R_hat_2, then s_2
        changed = [x.clone() for x in inputs]
        changed[i][:, 1] += 1.0
        assert not torch.equal(model(*changed)[:, 1], before[:, 1])


@torch.no_grad()
def test_padded_steps_never_change_a_valid_prediction():
    model = make_model()
    inputs = random_inputs()
    inputs[4][:, :2] = False
    before = model(*inputs)
    changed = [x.clone() for x in inputs]
    for i in range(3):
        changed[i][:, :2] += 5.0
    changed[3][:, :2] = 49
    after = model(*changed)
    assert torch.isfinite(after).all()
    assert torch.equal(after[:, 2:], before[:, 2:])


def test_action_loss_by_hand_ignores_padded_positions():
    predicted = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]]])
    actions = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]])
    mask = torch.tensor([[False, True, True]])
    # valid squared errors: (4 + 1) + (4 + 1) over 2 steps x 2 action dims
    assert dt.action_loss(predicted, actions, mask).item() == pytest.approx(10.0 / 4)
    predicted[0, 0] = 100.0
    actions[0, 0] = -100.0
    assert dt.action_loss(predicted, actions, mask).item() == pytest.approx(10.0 / 4)


class CountingEnv(gym.Env):
    """Reward t + 1 at step t, three steps per episode."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,))
    action_space = gym.spaces.Box(-1.0, 1.0, (2,))

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(3, self.t, np.float32), float(self.t), False, self.t == 3, {}


def test_rollout_conditions_on_the_target_minus_the_rewards_so_far():
    seen = []

    def act(rtg, states, actions, timesteps, mask):
        seen.append((rtg[0, :, 0].tolist(), timesteps[0].tolist(), mask[0].tolist(), states[0, :, 0].tolist(),
                     actions[0, -1].tolist()))
        return torch.full((1, 2), 0.5)

    total, discounted = dt.rollout(act, CountingEnv(), 100.0, 4, torch.device("cpu"), seed=0)
    assert total == 6.0
    assert discounted == pytest.approx(1 + 2 * dt.EVAL_DISCOUNT + 3 * dt.EVAL_DISCOUNT ** 2)
    assert seen[0] == ([0, 0, 0, 100.0], [0, 0, 0, 0], [False, False, False, True], [0, 0, 0, 0], [0, 0])
    assert seen[2][0] == pytest.approx([0, 100.0, 99.0, 97.0])  # 100, 100 - 1, 100 - 1 - 2: in the env's units
    assert seen[2][1:] == ([0, 0, 1, 2], [False, True, True, True], [0, 0, 1, 2], [0, 0])  # a_t unknown: 0


def test_dataset_targets_are_the_best_return_and_the_midpoint():
    data = toy_data([3, 7])  # returns 1 + 2 + 3 = 6 and 4 + ... + 10 = 49
    data["episode_returns"] = np.repeat([6.0, 49.0], [3, 7]).astype(np.float32)
    assert dt.dataset_targets(data) == [49.0, 27.5]


def make_dt_trainer(**kw):
    config = small_config(**{"warmup_steps": 2, **kw})
    return dt.Trainer(2, 1, 1.0, config, torch.device("cpu"))


def test_update_is_the_authors_adamw_with_warmup_and_clipping():
    """update(batch, step) equals the authors' loop (gym/experiment.py, training/seq_trainer.py): torch.optim.AdamW
    over every parameter, LambdaLR(min((t + 1) / warmup_steps, 1)) stepped after every update, and
    clip_grad_norm_(0.25) between backward and step; grad_norm is the norm before clipping."""
    torch.manual_seed(0)
    trainer = make_dt_trainer(dropout=0.0, weight_decay=0.1, actor_lr=1e-2)
    model = copy.deepcopy(trainer.actor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min((t + 1) / 2, 1))
    buffer = make_buffer([3, 7, 2])
    for step in range(1, 5):
        batch = buffer.sample(8)
        metrics = trainer.update(batch, step)
        loss = dt.action_loss(model(batch["returns_to_go"], batch["states"], batch["actions"], batch["timesteps"],
                                    batch["mask"]), batch["actions"], batch["mask"])
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        schedule.step()
        assert metrics["action_loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        assert metrics["grad_norm"].item() == pytest.approx(grad_norm.item(), rel=1e-4)
        assert float(trainer.actor_optimizer.param_groups[0]["lr"]) == pytest.approx(optimizer.param_groups[0]["lr"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)  # the warm-up is over after two updates
    for (name, p), q in zip(trainer.actor.named_parameters(), model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=2e-5), name  # rounding drift; a step moves p by about 1e-2


def test_compiled_update_is_not_recompiled_as_the_learning_rate_warms_up():
    """The scheduler changes the optimizer's tensor lr in place: a float lr would be a constant of the
    compiled graph, recompiled at every update of the warm-up (10k by default)."""
    torch.compiler.reset()
    buffer = make_buffer([3, 7, 2])
    trainer = make_dt_trainer(warmup_steps=10)
    update = torch.compile(trainer.update)
    update(buffer.sample(8), 1)
    with torch.compiler.set_stance("fail_on_recompile"):
        for step in range(2, 5):
            update(buffer.sample(8), step)
    assert float(trainer.actor_optimizer.param_groups[0]["lr"]) == pytest.approx(small_config().actor_lr * 5 / 10)


def test_policy_export_matches_trainer(tmp_path):
    """policy.pt2, loaded with torch alone, gives the trainer's actor's last action on contexts in the
    environment's units (raw states and returns-to-go, timesteps past T_max), for any batch size."""
    torch.manual_seed(0)
    config = small_config(rtg_scale=10.0)
    trainer = dt.Trainer(3, 2, 2.0, config, torch.device("cpu"))
    rng = np.random.default_rng(0)
    mean = rng.normal(size=3).astype(np.float32)
    std = rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    act = dt.DeployableContextPolicy(trainer.actor, mean, std, config.rtg_scale, config.max_ep_len)
    dt.export_dt_policy(tmp_path / "policy.pt2", act, config.context_len, action_dim=2)
    assert trainer.actor.training  # the export works on a copy
    program = torch.export.load(tmp_path / "policy.pt2").module()
    for batch in (1, 7):
        rtg, states, actions, timesteps, mask = random_inputs(batch, K=config.context_len)
        rtg, timesteps = rtg * 30.0, timesteps * 2  # timesteps up to 98, past max_ep_len 50
        mask[0, :2] = False
        with torch.no_grad():
            trainer.actor.eval()
            own = trainer.actor(rtg / 10.0, (states - torch.as_tensor(mean)) / torch.as_tensor(std), actions,
                                timesteps.clamp(max=49), mask)[:, -1]
            exported = program(rtg, states, actions, timesteps, mask)
        assert exported.shape == own.shape == (batch, 2)
        assert torch.allclose(exported, own, rtol=1e-5, atol=1e-6)
