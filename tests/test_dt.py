"""Decision Transformer: returns-to-go, left-padded windows, causality of the transformer, the
masked loss and the return-to-go bookkeeping of the evaluation rollout, on tiny hand-made data."""

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
    assert batch["returns_to_go"].tolist() == [[0, 0, 6, 5, 3], [0, 0, 0, 5, 3], [49, 45, 40, 34, 27],
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
    return [torch.randn(batch, K, generator=g), torch.randn(batch, K, state_dim, generator=g),
            torch.rand(batch, K, action_dim, generator=g) * 2 - 1, torch.randint(0, 50, (batch, K), generator=g),
            torch.ones(batch, K, dtype=torch.bool)]


def make_model():
    torch.manual_seed(0)
    return dt.DecisionTransformer(3, 2, 2.0, small_config()).eval()


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
        seen.append((rtg[0].tolist(), timesteps[0].tolist(), mask[0].tolist(), states[0, :, 0].tolist()))
        return torch.zeros(1, 2)

    config = small_config(rtg_scale=10.0)
    total = dt.rollout(act, CountingEnv(), 100.0, torch.zeros(3), torch.ones(3), config, 2, seed=0)
    assert total == 6.0
    assert seen[0] == ([0, 0, 0, 10.0], [0, 0, 0, 0], [False, False, False, True], [0, 0, 0, 0])
    assert seen[2][0] == pytest.approx([0, 10.0, 9.9, 9.7])  # (100, 100 - 1, 100 - 1 - 2) / 10
    assert seen[2][1:] == ([0, 0, 1, 2], [False, True, True, True], [0, 0, 1, 2])
