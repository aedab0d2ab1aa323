"""The README's lines a reader runs as written: the deployment line works on one observation and on a batch."""

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_deployment_line_works_on_one_observation_and_on_a_batch(tmp_path):
    line = re.search(r"`(actions = torch\.export\.load\(path\)\.module\(\)\(.*\))`", README)
    assert line, "README.md lost its deployment line"
    import iql

    torch.manual_seed(0)
    policy = nn.Sequential(nn.Linear(3, 1), nn.Tanh())
    path = tmp_path / "policy.pt2"
    iql.export_policy(path, policy, np.zeros(3, np.float32), np.ones(3, np.float32))
    for obs, rows in ((np.array([0.1, -0.2, 0.3]), 1), (np.random.default_rng(0).normal(size=(5, 3)), 5)):
        scope = {"torch": torch, "path": path, "obs": obs}
        exec(line.group(1), scope)
        expected = policy(torch.as_tensor(obs, dtype=torch.float32).reshape(rows, 3))
        assert scope["actions"].shape == (rows, 1)
        torch.testing.assert_close(scope["actions"], expected)
