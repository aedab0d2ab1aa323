"""`--compile true` captures the update with torch.compile; on the same seed and batches it must
match the eager update within floating-point tolerance (checked on CPU; compilation is slow, so
one small script stands for the mechanism that fit() applies to every script)."""

import numpy as np
import pytest
import torch

import throughput


@pytest.mark.parametrize("algo", ["td3_bc"])
def test_compiled_update_matches_eager(algo, monkeypatch):
    # Inductor draws random numbers (TD3's target noise) with its own generator unless told to call
    # eager's; with the same draws, the two updates must agree to rounding.
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    module = throughput.load_script(algo)
    device = torch.device("cpu")
    config = module.TrainConfig(device="cpu", batch_size=64, hidden_dim=32)
    buffer, _, _ = module.transition_buffer(throughput.synthetic_data(np.random.default_rng(0)), config, device)
    trainers = []
    for _ in range(2):
        torch.manual_seed(0)
        trainers.append(throughput.trainer_class(module)(throughput.STATE_DIM, throughput.ACTION_DIM, 1.0, config, device))
    eager, compiled = trainers[0].update, torch.compile(trainers[1].update)
    torch.manual_seed(1)
    batches = [buffer.sample(config.batch_size) for _ in range(4)]
    for i, batch in enumerate(batches):
        torch.manual_seed(100 + i)
        metrics_eager = eager(batch)
        torch.manual_seed(100 + i)
        metrics_compiled = compiled(batch)
        for key in metrics_eager:
            assert torch.allclose(metrics_eager[key], metrics_compiled[key], rtol=1e-4, atol=1e-5), key
    for (name, p), (_, q) in zip(trainers[0].actor.named_parameters(), trainers[1].actor.named_parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name
