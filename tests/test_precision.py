"""--precision bf16 (issue 47): the update under bf16 autocast, numerically guarded.  Only the hidden layers run in
bf16: every network's output layer (OutputLinear in the appendix, OutputVectorizedLinear in the critic block) stays
fp32, so Q- and V-values, targets, losses, log-probabilities and optimizer states are fp32.  Tolerance of a bf16
update against the fp32 update from the same weights, batch and random draws: every returned metric within
rtol 2e-2 + atol 1e-2, and every parameter tensor's move within 25% of the fp32 move (in norm; measured at most
about 10%).  fp32 stays bit-identical: tests/test_contract.py's checks are unchanged and the README's quick start
ends at 84.33."""

import json

import pytest
import torch
import torch.nn as nn

from conftest import tensors_of, two_updates_then_a_copy
from test_contract import CASES
from test_scripts import assert_one_sentence, run

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def trained(name):
    """Two trainers of CASES[name] with the same weights, optimizer moments and schedules after two fp32 updates,
    and the batch of update 3."""
    _, make_trainer, sample, _ = CASES[name]
    torch.manual_seed(0)
    a, b = two_updates_then_a_copy(make_trainer, sample)
    return a, b, sample(a)


def output_layers(trainer) -> list[nn.Module]:
    return [m for net in vars(trainer).values() if isinstance(net, nn.Module) for m in net.modules()
            if type(m).__name__ in ("OutputLinear", "OutputVectorizedLinear")]


@pytest.mark.parametrize("name", CASES)
def test_bf16_update_matches_fp32_update(name):
    fp32, bf16, batch = trained(name)
    before = {path: t.clone() for path, t in tensors_of(fp32.state_dict())}
    torch.manual_seed(1)
    metrics_fp32 = fp32.update(batch, 3)
    torch.manual_seed(1)
    with torch.autocast(**BF16):
        metrics_bf16 = bf16.update(batch, 3)
    for key, value in metrics_fp32.items():
        assert metrics_bf16[key].dtype == value.dtype, key
        assert torch.allclose(metrics_bf16[key], value, rtol=2e-2, atol=1e-2), (key, metrics_bf16[key], value)
    state_bf16, moved_apart = dict(tensors_of(bf16.state_dict())), False
    for path, tensor in tensors_of(fp32.state_dict()):
        assert state_bf16[path].dtype == tensor.dtype, path  # parameters and optimizer moments stay fp32
        if path in before and tensor.is_floating_point() and "optimizer" not in path and "scheduler" not in path:
            move_fp32, move_bf16 = tensor - before[path], state_bf16[path] - before[path]
            assert (move_bf16 - move_fp32).norm() <= 0.25 * move_fp32.norm(), path
            moved_apart |= not torch.equal(move_bf16, move_fp32)
    assert moved_apart  # the update did run in bf16


@pytest.mark.parametrize("name", CASES)
def test_outputs_are_fp32_under_bf16(name):
    """In a bf16 update, hidden layers give bf16 and every output layer, every network's output and every metric
    fp32; the policies' log-probabilities and the Q-values are fp32 when called under autocast too."""
    trainer, _, batch = trained(name)
    dtypes = {"hidden": set(), "output": set(), "network": set()}
    outputs = output_layers(trainer)
    assert outputs

    def record(kind):
        return lambda module, args, out: dtypes[kind].update(t.dtype for t in (out if isinstance(out, tuple) else (out,))
                                                             if isinstance(t, torch.Tensor) and t.is_floating_point())

    hooks = [m.register_forward_hook(record("output")) for m in outputs]
    hooks += [m.register_forward_hook(record("network")) for m in vars(trainer).values() if isinstance(m, nn.Module)]
    hooks += [m.register_forward_hook(record("hidden")) for net in vars(trainer).values() if isinstance(net, nn.Module)
              for m in net.modules() if m not in outputs and type(m).__name__ in ("Linear", "VectorizedLinear")]
    try:
        with torch.autocast(**BF16):
            metrics = trainer.update(batch, 3)
    finally:
        for hook in hooks:
            hook.remove()
    assert dtypes["hidden"] == {torch.bfloat16}
    assert dtypes["output"] == dtypes["network"] == {torch.float32}
    assert all(v.dtype == torch.float32 for v in metrics.values() if v.is_floating_point())
    states, actions = batch.get("observations"), batch.get("actions")
    with torch.autocast(**BF16), torch.no_grad():
        if hasattr(trainer, "critic"):
            assert trainer.critic(states, actions).dtype == torch.float32
        if hasattr(trainer, "value"):
            assert trainer.value(states).dtype == torch.float32
        actor = getattr(trainer, "actor", None)
        if hasattr(actor, "log_prob"):
            assert actor.log_prob(states, actions).dtype == torch.float32
        if hasattr(actor, "sample") and name in ("cql", "mopo", "combo"):  # the SAC actor: a, log pi(a|s)
            assert [t.dtype for t in actor.sample(states)] == [torch.float32] * 2


def test_output_layers_are_plain_layers_under_fp32():
    """fp32 bit-identical: the same parameters, state_dict keys and results as nn.Linear / VectorizedLinear."""
    import iql

    torch.manual_seed(0)
    net = iql.mlp(3, 2, 8)
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert list(net.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), plain.state_dict().values()))
    x = torch.randn(5, 3)
    assert torch.equal(net(x), plain(x))
    layer = iql.OutputVectorizedLinear(8, 1, 2)
    h = torch.randn(2, 5, 8)
    assert torch.equal(layer(h), iql.VectorizedLinear.forward(layer, h))


def test_fp16_is_one_error_line(tmp_path):
    assert_one_sentence(run("iql", "--precision", "fp16", "--checkpoints_path", str(tmp_path / "run"), check=False,
                            cwd=tmp_path), "precision must be fp32 or bf16, got 'fp16'")
    assert list(tmp_path.iterdir()) == []


def test_bf16_compiled_run_records_its_precision_and_refuses_another(minari_root, tmp_path):
    """fit() under --precision bf16 --compile true trains, evaluates and exports (in fp32); run.json records the
    precision, and resuming the run under fp32 is refused (precision changes what is learned)."""
    args = ["--dataset_id", "local/pendulum/medium-replay-v0", "--hidden_dim", "32", "--max_steps", "20",
            "--eval_every", "10", "--checkpoints_path", str(tmp_path / "run")]
    run("iql", *args, "--precision", "bf16", "--compile", "true", "--stop_after", "10", cwd=tmp_path)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["precision"] == "bf16"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for _, t in tensors_of(state["trainer"]["critic"]))
    assert (tmp_path / "run" / "policy.pt2").exists()
    refused = run("iql", *args, cwd=tmp_path, check=False)  # precision defaults to fp32
    assert_one_sentence(refused, "precision: 'bf16' there, 'fp32' now")
    run("iql", *args, "--precision", "bf16", cwd=tmp_path)  # the same precision resumes (eager: compile is free)
    assert json.loads((tmp_path / "run" / "finished.json").read_text())["step"] == 20
