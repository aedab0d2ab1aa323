"""The shared appendix's own pieces, tested on its canonical source (tools/shared/appendix.py): the
Optimizer must compute what torch.optim computes, since every update now steps through it."""

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("appendix", ROOT / "tools" / "shared" / "appendix.py")
appendix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(appendix)


def twin_networks():
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    reference = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def loss_of(net, step):
    torch.manual_seed(step)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    return (net(x) - y).pow(2).mean() * 10


def compare(ours_opt, ours, reference_opt, reference, schedule=None, clip=None, steps=6):
    for step in range(steps):
        ours_opt.step(loss_of(ours, step))
        reference_opt.zero_grad()
        loss_of(reference, step).backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(reference.parameters(), clip)
        reference_opt.step()
        if schedule is not None:
            schedule.step()
        for p, q in zip(ours.parameters(), reference.parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), step  # float rounding of the two formulas


def test_adam_matches_torch():
    ours, reference = twin_networks()
    compare(appendix.Optimizer(ours.parameters(), 1e-2), ours, torch.optim.Adam(reference.parameters(), 1e-2), reference)


def test_adamw_with_warmup_and_clipping_matches_torch():
    ours, reference = twin_networks()
    warmup = 3
    opt = appendix.Optimizer(ours.parameters(), 1e-2, weight_decay=0.1, max_grad_norm=0.25,
                             schedule=lambda t: torch.clamp((t + 1) / warmup, max=1.0))
    reference_opt = torch.optim.AdamW(reference.parameters(), 1e-2, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(reference_opt, lambda t: min((t + 1) / warmup, 1.0))
    compare(opt, ours, reference_opt, reference, schedule, clip=0.25)


def test_cosine_schedule_matches_torch():
    ours, reference = twin_networks()
    total = 5
    opt = appendix.Optimizer(ours.parameters(), 1e-2, schedule=lambda t: 0.5 * (1 + torch.cos(math.pi * t / total)))
    reference_opt = torch.optim.Adam(reference.parameters(), 1e-2)
    compare(opt, ours, reference_opt, reference, torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, total),
            steps=total)


def test_sgd_with_momentum_matches_torch():
    ours, reference = twin_networks()
    compare(appendix.Optimizer(ours.parameters(), 1e-2, kind="sgd", momentum=0.9), ours,
            torch.optim.SGD(reference.parameters(), 1e-2, momentum=0.9), reference)


def test_step_touches_only_its_own_parameters():
    """The actor's loss runs through the critic; stepping the actor must leave the critic alone."""
    actor, critic = nn.Linear(3, 2), nn.Linear(5, 1)
    before = [p.clone() for p in critic.parameters()]
    opt = appendix.Optimizer(actor.parameters(), 1e-2)
    states = torch.randn(8, 3)
    opt.step(-critic(torch.cat([states, actor(states)], -1)).mean())
    assert all(torch.equal(p, q) for p, q in zip(before, critic.parameters()))
    assert all(p.grad is None for p in critic.parameters())


def test_state_round_trips():
    ours, _ = twin_networks()
    opt = appendix.Optimizer(ours.parameters(), 1e-2)
    opt.step(loss_of(ours, 0))
    other = appendix.Optimizer(ours.parameters(), 1e-2)
    other.load_state_dict(opt.state_dict())
    assert torch.equal(other.steps, opt.steps)
    assert all(torch.equal(a, b) for a, b in zip(other.moments + other.second_moments, opt.moments + opt.second_moments))


@pytest.mark.parametrize("name,expected", [("cpu", "cpu"), ("auto", "cpu" if not torch.cuda.is_available() else "cuda")])
def test_pick_device(name, expected):
    assert appendix.pick_device(name).type == expected


def test_sgd_state_round_trips():
    ours, _ = twin_networks()
    opt = appendix.Optimizer(ours.parameters(), 1e-2, kind="sgd", momentum=0.9)
    opt.step(loss_of(ours, 0))
    other = appendix.Optimizer(ours.parameters(), 1e-2, kind="sgd", momentum=0.9)
    other.load_state_dict(opt.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.moments, opt.moments))


def test_resumed_clock_continues_from_the_checkpoint(tmp_path):
    """A resumed run's wall_time counts on from the seconds its checkpoint carried, not from zero."""
    @dataclasses.dataclass
    class Config:
        logging: str = "disabled"
        project: str = "test"
        dataset_id: str = "local/pendulum/medium-replay-v0"
        seed: int = 0

    ours, _ = twin_networks()
    appendix.save_checkpoint(tmp_path / "checkpoint.pt", 40, ours, Config(), {}, 123.0)
    step, elapsed = appendix.resume(tmp_path / "checkpoint.pt", ours, torch.device("cpu"))
    assert (step, elapsed) == (40, 123.0)
    log = appendix.RunLog(Config(), "test", tmp_path, elapsed)
    log.write(41, {"train/loss": 1.0})
    log.close()
    assert 123.0 <= json.loads((tmp_path / "log.jsonl").read_text())["wall_time"] < 183.0
