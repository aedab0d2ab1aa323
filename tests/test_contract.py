"""The trainer contract of every script, one parametrized test per promise: the update compiled as fit()
compiles it gives eager's results; policy.pt2 gives the trainer's own actions; a checkpoint's state, saved and
loaded as fit() does it (torch.load with weights_only=True), continues bit-identically.  Each case takes the
script's small trainer and batch from its own test file."""

import pytest
import torch

import test_awac
import test_awr
import test_bc_filtered
import test_bcq
import test_cql
import test_dt
import test_fqe
import test_iql
import test_model_based
import test_td3_bc
from conftest import (assert_compiled_matches_eager, assert_export_matches_policy, tensors_of,
                      two_updates_then_a_copy)


def awr_trainer():  # steps 1-2 fit V_psi, step 3 fits pi_phi
    trainer = test_awr.make_awr_trainer(test_awr.longer_trajectories(), value_steps=2, policy_steps=2)
    trainer.refresh_targets()
    return trainer


DT_BUFFER = test_dt.make_buffer([3, 7, 2])
# name -> (module, make_trainer(), sample(trainer), state_dim); cql with its warm start (bc_steps 2) and Lagrange.
CASES = {
    "td3_bc": (test_td3_bc.td3_bc, test_td3_bc.make_td3_bc_trainer, lambda t: test_td3_bc.random_batch(), 3),
    "iql": (test_iql.iql, test_iql.make_iql_trainer, lambda t: test_iql.random_batch(), 3),
    "awac": (test_awac.awac, test_awac.make_awac_trainer, lambda t: test_awac.random_batch(), 3),
    "awr": (test_awr.awr, awr_trainer, test_awr.batch_of, 3),
    "bc_filtered": (test_bc_filtered.bc_filtered, test_bc_filtered.make_bc_trainer,
                    lambda t: test_bc_filtered.random_batch(), 3),
    "bcq": (test_bcq.bcq, test_bcq.make_bcq_trainer, lambda t: test_bcq.random_batch(), 3),
    "cql": (test_cql.cql, lambda: test_cql.make_cql_trainer(bc_steps=2, cql_lagrange=True),
            lambda t: test_cql.random_batch(), 3),
    "cql_mean_target": (test_cql.cql, lambda: test_cql.make_cql_trainer(bc_steps=2, target_action="mean"),
                        lambda t: test_cql.random_batch(), 3),
    "cql_calibrated": (test_cql.cql, lambda: test_cql.make_cql_trainer(bc_steps=2, calibrated=True),
                       lambda t: test_cql.calibrated_batch(), 3),
    "fqe": (test_fqe.fqe, test_fqe.make_fqe_trainer, lambda t: test_fqe.random_batch(), 3),
    "dt": (test_dt.dt, test_dt.make_dt_trainer, lambda t: DT_BUFFER.sample(8), 3),
    "mopo": (test_model_based.mopo, lambda: test_model_based.make_trainer(test_model_based.mopo),
             lambda t: test_model_based.random_batch(), 2),
    "combo": (test_model_based.combo, lambda: test_model_based.make_trainer(test_model_based.combo),
              lambda t: test_model_based.random_batch(), 2),
}
# fqe evaluates a given policy and exports none; dt's policy.pt2 takes its context (tests/test_dt.py).
EXPORTED = [name for name in CASES if name not in ("fqe", "dt", "cql_mean_target", "cql_calibrated")]


@pytest.mark.parametrize("name", CASES)
def test_compiled_update_matches_eager(name):
    _, make_trainer, sample, _ = CASES[name]
    assert_compiled_matches_eager(make_trainer, sample, steps=4)


@pytest.mark.parametrize("name", EXPORTED)
def test_policy_export_matches_trainer(name, tmp_path):
    module, make_trainer, _, state_dim = CASES[name]
    assert_export_matches_policy(module, make_trainer(), state_dim, tmp_path)


@pytest.mark.parametrize("name", EXPORTED)
def test_policy_weights_give_the_exported_actions(name, tmp_path):
    """policy_weights.pt beside policy.pt2, read as fqe.py reads it (weights_only=True, a plain MLP), gives
    policy.pt2's actions; bcq's policy (VAE, perturbation, argmax over samples) has no such form."""
    module, make_trainer, _, state_dim = CASES[name]
    module.export_policy(tmp_path / "policy.pt2", make_trainer().policy(), torch.randn(state_dim).numpy(),
                         torch.rand(state_dim).add(0.5).numpy())
    if name == "bcq":
        assert not (tmp_path / "policy_weights.pt").exists()
        return
    raw = torch.randn(50, state_dim)
    with torch.no_grad():
        exported = torch.export.load(tmp_path / "policy.pt2").module()(raw)
        policy = test_fqe.fqe.load_policy(str(tmp_path / "policy.pt2"), "d", state_dim, exported.shape[1])
        assert torch.allclose(policy(raw), exported, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_checkpoint_state_continues_bit_identically(name):
    _, make_trainer, sample, _ = CASES[name]
    a, b = two_updates_then_a_copy(make_trainer, sample)
    batch = sample(a)
    metrics = []
    for trainer in (a, b):  # the same random draws, the same scheduled learning rates, the same moments
        torch.manual_seed(1)
        metrics.append(trainer.update(batch, 3))
    assert all(torch.equal(metrics[0][k], metrics[1][k]) for k in metrics[0])
    b_state = dict(tensors_of(b.state_dict()))
    for path, tensor in tensors_of(a.state_dict()):
        assert torch.equal(tensor, b_state[path]), path
