import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from vqtoolkit.nn.gaussian import (
    GaussianBottleneck,
    IdentityBottleneck,
    bce_sum,
    bits_per_dim,
    elbo,
    half_l2_sum,
    kl_divergence,
    reparameterize,
)


def test_kl_hand_computed_two_elements():
    # mean (1, 0), logvar (0, ln 2): -1/2[(1 + 0 - 1 - 1) + (1 + ln 2 - 0 - 2)] = 1 - ln(2) / 2
    mean = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    assert kl_divergence(mean, logvar).item() == pytest.approx(1 - math.log(2) / 2, abs=1e-6)


def test_kl_is_zero_for_the_prior_and_sums_over_all_non_batch_dims():
    assert torch.equal(kl_divergence(torch.zeros(3, 2, 4, 5), torch.zeros(3, 2, 4, 5)), torch.zeros(3))
    mean = torch.ones(2, 3, 4)
    kl = kl_divergence(mean, torch.zeros_like(mean))
    assert kl.shape == (2,)
    torch.testing.assert_close(kl, torch.full((2,), 0.5 * 12))


def test_kl_matches_monte_carlo_estimate():
    torch.manual_seed(0)
    mean = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]])
    logvar = torch.tensor([[0.0, -1.0, 0.5], [1.0, -0.5, 0.2]])
    samples = mean + torch.exp(0.5 * logvar) * torch.randn(200_000, *mean.shape)
    posterior = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(0.0, 1.0)
    log_ratio = posterior.log_prob(samples) - prior.log_prob(samples)
    monte_carlo = log_ratio.sum(-1).mean(0)
    torch.testing.assert_close(kl_divergence(mean, logvar), monte_carlo, atol=0.03, rtol=0.01)


def test_bce_sum_equals_the_lectures_sum_reduced_bce():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 4, 4) * 3
    x = torch.rand(3, 1, 4, 4)
    per_example = bce_sum(logits, x)
    assert per_example.shape == (3,)
    seed_loss = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
    torch.testing.assert_close(per_example.sum(), seed_loss)
    for index in range(3):
        seed_one = F.binary_cross_entropy(torch.sigmoid(logits[index]), x[index], reduction="sum")
        torch.testing.assert_close(per_example[index], seed_one)


def test_bce_sum_hand_case():
    # logit 0 -> p = 1/2; target 1 -> -log(1/2) per element, two elements
    assert bce_sum(torch.zeros(1, 2), torch.ones(1, 2)).item() == pytest.approx(2 * math.log(2))


def test_half_l2_sum_hand_case():
    x_hat = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(half_l2_sum(x_hat, x), torch.tensor([2.5, 12.5]))


def test_elbo_and_bits_per_dim_hand_cases():
    recon_nll, kl = torch.tensor([3.0, 1.0]), torch.tensor([0.5, 2.0])
    torch.testing.assert_close(elbo(recon_nll, kl), torch.tensor([-3.5, -3.0]))
    nll = torch.tensor([8 * math.log(2), 4 * math.log(2)])
    torch.testing.assert_close(bits_per_dim(nll, 4), torch.tensor([2.0, 1.0]))


def test_reparameterisation_moments_and_gradients():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0])
    logvar = torch.tensor([0.0, math.log(4.0)])
    samples = reparameterize(mean.expand(100_000, 2), logvar.expand(100_000, 2))
    torch.testing.assert_close(samples.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.tensor([1.0, 2.0]), atol=0.03, rtol=0)

    mean = mean.clone().requires_grad_()
    logvar = logvar.clone().requires_grad_()
    torch.manual_seed(1)
    reparameterize(mean, logvar).sum().backward()
    torch.manual_seed(1)
    noise = torch.randn(2)
    # dz/dmean = 1, dz/dlogvar = sigma * eps / 2
    torch.testing.assert_close(mean.grad, torch.ones(2))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * noise)


@pytest.mark.parametrize("grid", [(6,), (3, 4), (2, 3, 2)])
def test_gaussian_bottleneck_shapes_loss_and_sampling(grid):
    torch.manual_seed(0)
    bottleneck = GaussianBottleneck(dim=4, kl_weight=0.5)
    z = torch.randn(3, 4, *grid)
    channel_last = rearrange(z, "b c ... -> b ... c")
    mean = rearrange(bottleneck.mean_head(channel_last), "b ... c -> b c ...")
    logvar = rearrange(bottleneck.logvar_head(channel_last), "b ... c -> b c ...")
    expected_kl = kl_divergence(mean, logvar)

    bottleneck.eval()
    out = bottleneck(z)
    assert out.z.shape == z.shape and out.codes is None
    torch.testing.assert_close(out.z, mean)
    torch.testing.assert_close(out.loss, 0.5 * expected_kl.mean())
    torch.testing.assert_close(out.stats["kl"], expected_kl.mean())
    torch.testing.assert_close(out.stats["kl_per_example"], expected_kl)

    sampled = bottleneck(z, sample=True).z
    assert not torch.allclose(sampled, mean)
    bottleneck.train()
    assert not torch.allclose(bottleneck(z).z, mean)
    torch.testing.assert_close(bottleneck(z, sample=False).z, mean)


def test_gaussian_bottleneck_loss_trains_both_heads():
    bottleneck = GaussianBottleneck(dim=3)
    z = torch.randn(2, 3, 5, requires_grad=True)
    out = bottleneck(z)
    (out.z.sum() + out.loss).backward()
    for parameter in bottleneck.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert z.grad is not None


def test_continuous_bottlenecks_have_no_codes():
    for bottleneck in (GaussianBottleneck(dim=2), IdentityBottleneck(dim=2)):
        assert not bottleneck.discrete
        assert bottleneck.codebook_sizes() == []
        with pytest.raises(TypeError):
            bottleneck.encode(torch.zeros(1, 2, 3))


def test_identity_bottleneck_passes_latents_through():
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = IdentityBottleneck(dim=3)(z)
    assert out.z is z
    assert out.loss.item() == 0.0 and out.loss.shape == ()
