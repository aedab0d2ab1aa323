"""BCQ's math against hand computations: the soft clipped double-Q target, the VAE loss, the clipped latent
when sampling, the bounded perturbation, action selection by Q_1 among 100 sampled actions (10 in the
target), the update against the authors' train(), and the trainer's contract: compiled update, exported
policy, checkpoint state."""

import math

import pytest
import torch

import bcq


def test_soft_clipped_bellman_target_by_hand():
    # Q'_j(s', a_i) for B = 2 next states and n = 3 sampled actions, [2, B, n].
    next_q = torch.tensor([[[1.0, 4.0, 2.0], [0.0, -1.0, 3.0]],
                           [[3.0, 0.0, 2.0], [2.0, 1.0, -3.0]]])
    rewards, terminals = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    # lambda = .75: state 0: a_1 .75 * 1 + .25 * 3 = 1.5, a_2 .75 * 0 + .25 * 4 = 1, a_3 2  -> max 2
    #               state 1: terminal, the target is the reward alone
    target = bcq.bellman_target(next_q, rewards, terminals, gamma=0.9, lmbda=0.75)
    torch.testing.assert_close(target, torch.tensor([1.0 + 0.9 * 2.0, 0.5]))
    # without the terminal, state 1: a_1 .75 * 0 + .25 * 2 = .5, a_2 -.75 + .25 = -.5, a_3 -2.25 + .75 = -1.5
    target = bcq.bellman_target(next_q, rewards, torch.zeros(2), gamma=0.9, lmbda=0.75)
    torch.testing.assert_close(target, torch.tensor([2.8, 0.5 + 0.9 * 0.5]))
    # lambda = 1 is clipped double Q: max_i min_j
    target = bcq.bellman_target(next_q, torch.zeros(2), torch.zeros(2), gamma=1.0, lmbda=1.0)
    torch.testing.assert_close(target, torch.tensor([2.0, 0.0]))


def test_vae_loss_by_hand():
    recon = torch.tensor([[0.5, -1.0]])
    actions = torch.tensor([[1.0, -1.0]])
    mean = torch.tensor([[1.0, 0.0, 0.0, 2.0]])
    log_std = torch.tensor([[0.0, math.log(2.0), 0.0, 0.0]])
    reconstruction = (0.25 + 0.0) / 2
    # D_KL per latent = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2): 0.5, 1/2 (4 - 1 - log 4), 0, 2
    kl = (0.5 + 0.5 * (3.0 - math.log(4.0)) + 0.0 + 2.0) / 4
    loss = bcq.vae_loss(recon, actions, mean, log_std, kl_weight=0.5)
    assert loss.item() == pytest.approx(reconstruction + 0.5 * kl, rel=1e-6)


def test_vae_loss_through_a_fixed_encoder_output():
    vae = bcq.VAE(state_dim=3, action_dim=1, hidden_dim=8, max_action=2.0, latent_clip=0.5)
    encoder_out = vae.encoder[-1]
    torch.nn.init.zeros_(encoder_out.weight)
    with torch.no_grad():
        encoder_out.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 0.0]))  # mu = (.5, -.5), log sigma = (0, 0)
    state, action = torch.zeros(1, 3), torch.tensor([[0.3]])
    mean, log_std = vae.encode(state, action)
    torch.testing.assert_close(mean, torch.tensor([[0.5, -0.5]]))
    torch.manual_seed(0)
    recon, mean, log_std = vae(state, action)
    torch.manual_seed(0)
    z = torch.tensor([[0.5, -0.5]]) + torch.randn(1, 2)
    torch.testing.assert_close(recon, vae.decode(state, z))
    kl = 0.5 * (0.25 + 1.0 - 1.0 - 0.0)  # the same for both latents: mu^2 = .25, sigma = 1
    expected = (recon.item() - 0.3) ** 2 + 0.5 * kl
    assert bcq.vae_loss(recon, action, mean, log_std, 0.5).item() == pytest.approx(expected, rel=1e-5)


def test_latent_clipped_when_sampling():
    vae = bcq.VAE(state_dim=3, action_dim=2, hidden_dim=8, max_action=1.0, latent_clip=0.5)
    seen = []
    vae.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0][:, 3:]))
    states = torch.zeros(5000, 3)
    torch.manual_seed(0)
    vae.decode(states)
    z = seen[0]
    assert z.shape == (5000, 4)
    assert z.abs().max().item() == 0.5  # the prior's tails are cut at exactly 0.5
    torch.manual_seed(0)
    torch.testing.assert_close(z, torch.randn(5000, 4).clamp(-0.5, 0.5))
    action = vae.decode(states[:3])
    assert action.abs().max().item() <= 1.0


def test_perturbation_bounded_by_phi_max_action():
    torch.manual_seed(0)
    actor = bcq.Perturbation(state_dim=3, action_dim=2, hidden_dim=16, max_action=2.0, phi=0.05)
    with torch.no_grad():
        actor.net[-1].weight.mul_(1000.0)  # saturate tanh: xi reaches its bound
    states, actions = torch.randn(256, 3), torch.rand(256, 2) * 3.0 - 1.5  # away from the action bounds
    moved = actor(states, actions) - actions
    assert moved.abs().max().item() <= 0.05 * 2.0 + 1e-6
    assert moved.abs().max().item() == pytest.approx(0.1, abs=1e-4)
    at_bound = actor(states, torch.full((256, 2), 2.0))
    assert at_bound.max().item() <= 2.0  # clipped to the action bounds


def test_policy_picks_the_best_sample_by_q1():
    config = bcq.TrainConfig(eval_n_actions=10, hidden_dim=16, vae_hidden_dim=16)
    trainer = bcq.Trainer(3, 1, 2.0, config, torch.device("cpu"))
    states = torch.randn(4, 3)
    torch.manual_seed(1)
    actions = trainer.policy()(states)
    torch.manual_seed(1)
    repeated, candidates = bcq.sample_actions(trainer.vae, trainer.actor, states, 10)
    assert torch.equal(repeated, states.repeat_interleave(10, 0))
    q1 = trainer.critic(repeated, candidates)[0].view(4, 10)
    expected = candidates.view(4, 10, 1)[torch.arange(4), q1.argmax(1)]
    torch.testing.assert_close(actions, expected)
    assert actions.shape == (4, 1)


def make_bcq_trainer(**overrides):
    config = bcq.TrainConfig(device="cpu", hidden_dim=16, vae_hidden_dim=16, **overrides)
    return bcq.Trainer(3, 2, 1.0, config, torch.device("cpu"))


def random_batch(batch_size=16, state_dim=3, action_dim=2):
    return {"observations": torch.randn(batch_size, state_dim), "actions": torch.rand(batch_size, action_dim) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, state_dim),
            "terminals": (torch.rand(batch_size) < 0.1).float()}


def decoded_batch_sizes(trainer, run):
    sizes = []
    handle = trainer.vae.decoder.register_forward_hook(lambda module, inputs, output: sizes.append(len(inputs[0])))
    run()
    handle.remove()
    return sizes


def test_acting_samples_100_actions_and_the_target_10():
    # The authors' select_action repeats the state 100 times; their target repeats the next state 10 times.
    assert bcq.TrainConfig.eval_n_actions == 100 and bcq.TrainConfig.n_actions == 10
    trainer = make_bcq_trainer()
    assert decoded_batch_sizes(trainer, lambda: trainer.policy()(torch.randn(3, 3))) == [300]
    # the update decodes the batch (VAE loss), 10 samples per next state (target), the batch (actor loss)
    assert decoded_batch_sizes(trainer, lambda: trainer.update(random_batch(8), 1)) == [8, 80, 8]


def own_step(optimizer, loss):
    """One step of `optimizer` down the gradient of `loss` with respect to its own parameters only."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p, grad in zip(params, torch.autograd.grad(loss, params)):
        p.grad = grad
    optimizer.step()


def authors_update(trainer, batch, n=10, gamma=0.99, lmbda=0.75, tau=0.005):
    """continuous_BCQ/BCQ.py train(): the VAE, then the critics on the new VAE's samples, then the actor, then
    both targets; every gradient taken with respect to the network it updates."""
    states, actions = batch["observations"], batch["actions"]
    recon, mean, log_std = trainer.vae(states, actions)
    own_step(trainer.vae_optimizer, bcq.vae_loss(recon, actions, mean, log_std, 0.5))
    with torch.no_grad():
        next_states, next_actions = bcq.sample_actions(trainer.vae, trainer.actor_target, batch["next_observations"], n)
        next_q = trainer.critic_target(next_states, next_actions).view(2, -1, n)
        y = bcq.bellman_target(next_q, batch["rewards"], batch["terminals"], gamma, lmbda)
    own_step(trainer.critic_optimizer, bcq.critic_loss(trainer.critic, batch, y))
    with torch.no_grad():
        sampled = trainer.vae.decode(states)
    own_step(trainer.actor_optimizer, bcq.actor_loss(trainer.critic, trainer.actor, states, sampled))
    with torch.no_grad():
        for target, net in ((trainer.critic_target, trainer.critic), (trainer.actor_target, trainer.actor)):
            for target_param, param in zip(target.parameters(), net.parameters()):
                target_param.copy_(tau * param + (1 - tau) * target_param)


def test_update_reproduces_the_authors_train():
    # The actor's loss.backward() also fills the critic's gradients: they must not reach the critic's next step.
    torch.manual_seed(0)
    trainer = make_bcq_trainer()
    torch.manual_seed(0)
    reference = make_bcq_trainer()
    for step in (1, 2, 3):
        torch.manual_seed(100 + step)
        batch = random_batch()
        torch.manual_seed(200 + step)
        trainer.update(batch, step)
        torch.manual_seed(200 + step)
        authors_update(reference, batch)
    for name in ("actor", "actor_target", "critic", "critic_target", "vae"):
        for (key, ours), theirs in zip(getattr(trainer, name).state_dict().items(),
                                       getattr(reference, name).state_dict().values()):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")


def test_policy_export_matches_trainer(tmp_path):
    from conftest import assert_export_matches_policy

    # The policy draws its VAE samples inside: the exported program's randn follows torch's global generator,
    # so under the same seed both pick the same actions, and another seed gives other samples.
    trainer = make_bcq_trainer()
    assert_export_matches_policy(bcq, trainer, 3, tmp_path)
    program = torch.export.load(tmp_path / "policy.pt2").module()
    raw = torch.randn(5, 3)
    torch.manual_seed(1)
    first = program(raw)
    torch.manual_seed(2)
    assert not torch.equal(first, program(raw))
