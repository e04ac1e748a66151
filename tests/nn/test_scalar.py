"""FSQ, residual FSQ, LFQ, the rotation trick and quantizer dropout against hand-computed cases."""

import math

import pytest
import torch

from vqtoolkit.nn.quantize import ResidualVQ, VectorQuantizer, quantizer_dropout_mask, rotate_to
from vqtoolkit.nn.scalar import FSQ, LFQ, ResidualFSQ, lfq_entropies


def test_fsq_even_and_odd_levels_take_exactly_their_values():
    fsq = FSQ(2, [4, 3])  # 12 codes; channel 0 takes -1, -1/2, 0, 1/2 and channel 1 takes -1, 0, 1
    z = torch.tensor([[-50.0, -50.0], [0.0, 0.0], [50.0, 50.0]])
    values, codes = fsq.quantize(z)
    assert values.tolist() == [[-1.0, -1.0], [0.0, 0.0], [0.5, 1.0]]
    # digits (value * half width + half width): [0, 0], [2, 1], [3, 2]; code = d0 + 4 d1
    assert codes.tolist() == [0, 2 + 4 * 1, 3 + 4 * 2]
    assert torch.equal(fsq.values(codes), values)


def test_fsq_reaches_every_code_and_decodes_what_it_encodes():
    fsq = FSQ(3, [5, 4, 3]).eval()
    grid = torch.linspace(-4, 4, 41)
    z = torch.cartesian_prod(grid, grid, grid).T.reshape(1, 3, -1)  # (1, 3, 41^3)
    out = fsq(z)
    assert out.codes.unique().numel() == 60 and fsq.codebook_sizes() == [60]
    assert torch.equal(fsq.decode(out.codes), out.z)
    assert torch.equal(fsq.encode(z), out.codes)
    assert fsq.usage_stats()["used_fraction"] == 1.0


def test_fsq_gradient_is_straight_through_the_bound():
    fsq = FSQ(1, [5])  # odd: no offset, bound = tanh(z) * 2 * 1.001, half width 2
    z = torch.tensor([[[0.3, -1.2]]], requires_grad=True)
    fsq(z).z.sum().backward()
    expected = (1 - torch.tanh(z.detach()) ** 2) * 2 * 1.001 / 2
    assert torch.allclose(z.grad, expected)


def test_fsq_refuses_levels_it_cannot_code():
    with pytest.raises(ValueError, match="2 or more values"):
        FSQ(4, [8, 1])
    with pytest.raises(ValueError, match="codes; at most"):
        FSQ(4, [2**13, 2**12])


def test_residual_fsq_stages_refine_and_any_first_stages_decode():
    torch.manual_seed(0)
    rfsq = ResidualFSQ(4, [7, 7, 7, 7], num_quantizers=3).eval()
    z = torch.randn(8, 4, 16) * 0.5
    out = rfsq(z)
    assert out.codes.shape == (8, 3, 16)
    assert torch.allclose(rfsq.decode(out.codes), out.z, atol=1e-6)
    errors = [(rfsq.decode(out.codes[:, :n]) - z).abs().mean().item() for n in (1, 2, 3)]
    assert errors[0] > 2 * errors[1] and errors[1] > 1.5 * errors[2]  # each stage codes a finer residual
    # stage 1 quantises the residual scaled by (L - 1) = 6: its values are stage-0 steps / 6
    stage_one = rfsq.stages[1].values(out.codes[:, 1]) / 6
    assert torch.allclose(rfsq.decode(out.codes[:, :2]) - rfsq.decode(out.codes[:, :1]),
                          stage_one.permute(0, 2, 1), atol=1e-6)  # fmt: skip


def test_lfq_entropies_by_hand():
    # two certain latents on opposite codes: each sample's entropy 0, the batch's mean is 2 codes: ln 2
    sample, batch = lfq_entropies(torch.tensor([[10.0, 10.0], [-10.0, -10.0]]), temperature=0.01)
    assert sample.item() == pytest.approx(0, abs=1e-6) and batch.item() == pytest.approx(math.log(2))
    # a latent at 0 is undecided between all 4 codes: ln 4 for itself and for the batch
    sample, batch = lfq_entropies(torch.zeros(1, 2), temperature=0.01)
    assert sample.item() == pytest.approx(math.log(4)) and batch.item() == pytest.approx(math.log(4))
    # p(bit = 1) = sigmoid(4 z / t): z = 0.01, t = 0.04 gives sigmoid(1)
    p = torch.sigmoid(torch.tensor(1.0))
    sample, _ = lfq_entropies(torch.tensor([[0.01]]), temperature=0.04)
    assert sample.item() == pytest.approx(-(p * p.log() + (1 - p) * (1 - p).log()).item())
    # beyond 12 bits the batch term is the sum of the mean bits' entropies: 13 ln 2 here, not ln 2
    _, batch = lfq_entropies(torch.tensor([[10.0] * 13, [-10.0] * 13]), temperature=0.01)
    assert batch.item() == pytest.approx(13 * math.log(2))


def test_lfq_gradients_stay_finite_where_the_codes_are_certain():
    for bits in (4, 14):  # the exact batch entropy and the per-bit one
        z = torch.tensor([[50.0] * bits, [-50.0] * bits, [0.0] * bits], requires_grad=True)
        sample, batch = lfq_entropies(z, temperature=0.01)
        (sample - batch).backward()
        assert torch.isfinite(z.grad).all() and torch.isfinite(sample) and torch.isfinite(batch)


def test_lfq_codes_are_the_sign_bits_and_its_loss_rewards_spread_codes():
    lfq = LFQ(3, bits=3)
    z = torch.tensor([[[0.5], [-0.2], [0.1]]])  # bits 1, 0, 1 -> code 1 + 4
    assert lfq.encode(z).item() == 5 and lfq.decode(torch.tensor([[5]])).flatten().tolist() == [1, -1, 1]
    spread = torch.tensor([[[1.0, -1.0], [1.0, -1.0], [1.0, -1.0]]])  # on codes 7 and 0: already at +-1
    same = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    assert lfq(spread).loss < lfq(same).loss  # the same commitment (0), higher batch entropy
    assert lfq(spread).loss.item() == pytest.approx(-0.1 * math.log(2), abs=1e-5)


def test_rotation_trick_by_hand():
    # e = (1, 0) -> q = (0, 2): R rotates e's direction onto q's, scale |q| / |e| = 2
    e = torch.tensor([[1.0], [0.0]])[None].requires_grad_()  # (B=1, D=2, T=1)
    q = torch.tensor([[0.0], [2.0]])[None]
    out = rotate_to(e, q)
    assert torch.equal(out, q)  # the value is the code's
    (out * torch.tensor([[1.0], [0.0]])[None]).sum().backward()
    # d/de of g . (2 R e) = 2 R^T g, R = [[0, -1], [1, 0]], g = (1, 0): (0, -2); straight-through gives (1, 0)
    assert torch.allclose(e.grad.flatten(), torch.tensor([0.0, -2.0]), atol=1e-6)


def test_rotation_trick_in_the_quantizer_keeps_values_and_changes_gradients():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 6)
    grads = {}
    for gradient in ("ste", "rotation"):
        torch.manual_seed(1)
        vq = VectorQuantizer(4, 8, ema=False, kmeans_init=False, gradient=gradient)
        latents = z.clone().requires_grad_()
        out = vq(latents)
        assert torch.allclose(out.z, vq.decode(out.codes), atol=1e-6)
        out.z.pow(2).sum().backward()
        grads[gradient] = latents.grad
    assert not torch.allclose(grads["ste"], grads["rotation"])


def test_quantizer_dropout_keeps_a_prefix_of_stages():
    torch.manual_seed(0)
    mask = quantizer_dropout_mask(4000, 4, 1.0, "cpu")
    kept = mask.sum(1)
    assert torch.equal(mask, (torch.arange(4)[None] < kept[:, None]).float())  # a prefix of ones
    assert set(kept.long().tolist()) == {1, 2, 3, 4} and abs(kept.mean().item() - 2.5) < 0.1
    assert quantizer_dropout_mask(10, 4, 0.0, "cpu").eq(1).all()


def test_residual_vq_with_quantizer_dropout_decodes_each_example_from_its_first_stages():
    torch.manual_seed(0)
    rvq = ResidualVQ(
        4, num_quantizers=3, codebook_size=8, ema=False, kmeans_init=False, quantizer_dropout=1.0
    )
    z = torch.randn(64, 4, 5)
    out = rvq.train()(z)
    sums = torch.stack([rvq.decode(out.codes[:, :n]) for n in (1, 2, 3)])  # (3, B, D, T)
    kept = [
        next(n for n in (1, 2, 3) if torch.allclose(out.z[b], sums[n - 1, b], atol=1e-5)) for b in range(64)
    ]
    assert set(kept) == {1, 2, 3}  # every example decodes from a prefix of its codes, of every length
    assert torch.allclose(
        rvq.eval()(z).z, rvq.decode(rvq.encode(z)), atol=1e-5
    )  # no dropout outside training
