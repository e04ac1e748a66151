import math

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st

from vqtoolkit.nn.quantize import ResidualVQ, VectorQuantizer

GRIDS = [(7,), (3, 5), (2, 3, 4)]


def flatten(z: torch.Tensor) -> torch.Tensor:
    return rearrange(z, "b d ... -> (b ...) d")


def quantizer_with_codebook(codebook: torch.Tensor, **kwargs) -> VectorQuantizer:
    kwargs = {"kmeans_init": False, **kwargs}
    vq = VectorQuantizer(dim=codebook.shape[1], codebook_size=codebook.shape[0], **kwargs)
    with torch.no_grad():
        vq.codebook.copy_(codebook)
        vq.ema_sum.copy_(codebook)
    return vq


def latents_for_codes(vq: VectorQuantizer, codes: torch.Tensor, noise: float = 0.01) -> torch.Tensor:
    z = vq.decode(codes).detach()
    return z + noise * torch.randn_like(z)


@pytest.mark.parametrize("grid", GRIDS)
def test_nearest_neighbour_matches_brute_force(grid):
    torch.manual_seed(0)
    vq = quantizer_with_codebook(torch.randn(16, 4)).eval()
    z = torch.randn(2, 4, *grid)
    codes = vq.encode(z)
    assert codes.shape == (2, *grid) and codes.dtype == torch.int64
    brute = torch.cdist(flatten(z), vq.codebook).argmin(dim=1)
    assert torch.equal(codes.flatten(), brute)
    assert torch.equal(vq(z).codes, codes)


def test_chunked_and_unchunked_distances_give_identical_codes():
    torch.manual_seed(0)
    codebook = torch.randn(33, 5)
    z = torch.randn(4, 5, 50)
    codes = {}
    for chunk_size in (7, 0, 200):
        vq = quantizer_with_codebook(codebook, chunk_size=chunk_size).eval()
        codes[chunk_size] = vq.encode(z)
        assert codes[chunk_size].min() >= 0 and codes[chunk_size].max() < 33
    assert torch.equal(codes[7], codes[0]) and torch.equal(codes[0], codes[200])
    assert torch.equal(codes[0].flatten(), torch.cdist(flatten(z), codebook).argmin(dim=1))


def test_automatic_chunking_splits_large_problems():
    torch.manual_seed(0)
    codebook_size = 2**13  # automatic chunk = 2**22 / 2**13 = 512 rows, so 1200 rows take three chunks
    vq = quantizer_with_codebook(torch.randn(codebook_size, 3), chunk_size=0).eval()
    z = torch.randn(1, 3, 1200)
    reference = quantizer_with_codebook(vq.codebook, chunk_size=1200).eval()
    assert torch.equal(vq.encode(z), reference.encode(z))


def test_distances_are_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = quantizer_with_codebook(torch.randn(64, 8)).eval()
    z = torch.randn(8, 8, 64)
    expected = vq.encode(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(vq.encode(z), expected)
        out = vq(z)
    assert torch.equal(out.codes, expected)
    assert out.z.dtype == torch.float32
    # bf16 input: distances from its values upcast to fp32
    z_bf16 = z.bfloat16()
    brute = torch.cdist(flatten(z_bf16.float()), vq.codebook).argmin(dim=1)
    assert torch.equal(vq.encode(z_bf16).flatten(), brute)


def test_straight_through_gradient_without_commitment():
    torch.manual_seed(0)
    vq = quantizer_with_codebook(torch.randn(8, 3), beta=0.0)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z)
    upstream = torch.randn_like(z)
    ((out.z * upstream).sum() + out.loss).backward()
    torch.testing.assert_close(z.grad, upstream)


@pytest.mark.parametrize("ema", [True, False])
def test_straight_through_gradient_plus_commitment(ema):
    torch.manual_seed(0)
    codebook = torch.randn(8, 3)
    vq = quantizer_with_codebook(codebook, beta=0.25, ema=ema).eval()
    z = torch.randn(2, 3, 5, requires_grad=True)
    out = vq(z)
    quantized = vq.decode(out.codes).detach()
    torch.testing.assert_close(out.z, quantized, rtol=0, atol=0)
    upstream = torch.randn_like(z)
    ((out.z * upstream).sum() + out.loss).backward()
    # d/dz beta * mean((z - e)^2) = 2 beta (z - e) / numel
    commitment_grad = 2 * 0.25 * (z.detach() - quantized) / z.numel()
    torch.testing.assert_close(z.grad, upstream + commitment_grad)
    if not ema:
        # VQ loss mean((e - sg[z])^2) pulls each used code towards its vectors
        residual = flatten(quantized - z.detach())
        expected = torch.zeros_like(codebook).index_add_(0, out.codes.flatten(), 2 * residual / z.numel())
        torch.testing.assert_close(vq.codebook.grad, expected)
        torch.testing.assert_close(out.loss, 1.25 * torch.mean((z.detach() - quantized) ** 2))
    else:
        assert not vq.codebook.requires_grad
        torch.testing.assert_close(out.loss, 0.25 * torch.mean((z.detach() - quantized) ** 2))


def test_one_ema_step_matches_the_lecture_equations():
    torch.manual_seed(0)
    gamma = 0.9
    codebook = torch.tensor([[0.0, 0.0], [4.0, 4.0], [-4.0, 4.0]])
    vq = quantizer_with_codebook(codebook, decay=gamma, eps=0.0)
    old_count = torch.tensor([2.0, 3.0, 1.5])
    old_sum = torch.tensor([[0.2, -0.2], [12.0, 11.0], [-6.0, 6.5]])
    vq.ema_count.copy_(old_count)
    vq.ema_sum.copy_(old_sum)
    codes = torch.tensor([[0, 1, 1, 2, 0, 1]])
    z = latents_for_codes(vq, codes, noise=0.5)

    out = vq.train()(z)
    assert torch.equal(out.codes, codes)
    vectors = flatten(z)
    n = torch.stack([(codes.flatten() == i).sum() for i in range(3)]).float()
    vector_sums = torch.stack([vectors[codes.flatten() == i].sum(0) for i in range(3)])
    expected_count = gamma * old_count + (1 - gamma) * n
    expected_sum = gamma * old_sum + (1 - gamma) * vector_sums
    torch.testing.assert_close(vq.ema_count, expected_count)
    torch.testing.assert_close(vq.ema_sum, expected_sum)
    torch.testing.assert_close(vq.codebook, expected_sum / expected_count[:, None])
    # the decoder saw the codebook from before the update
    torch.testing.assert_close(out.z, codebook[codes.flatten()].T[None], rtol=0, atol=0)


def test_ema_step_with_an_unused_code_stays_finite_and_laplace_smoothed():
    torch.manual_seed(0)
    gamma, eps = 0.99, 1e-5
    codebook = torch.tensor([[0.0, 0.0], [4.0, 4.0], [100.0, 100.0]])
    vq = quantizer_with_codebook(codebook, decay=gamma, eps=eps)
    vq.ema_count.copy_(torch.tensor([1.0, 1.0, 0.0]))  # code 2 never used: a plain m / N would be 0 / 0
    vq.ema_sum[2] = 0.0
    codes = torch.tensor([[0, 1, 0, 1]])
    z = latents_for_codes(vq, codes)
    vq.train()(z)
    assert torch.isfinite(vq.codebook).all()

    vectors = flatten(z)
    count = gamma * torch.tensor([1.0, 1.0, 0.0]) + (1 - gamma) * torch.tensor([2.0, 2.0, 0.0])
    smoothed = (count + eps) / (count.sum() + 3 * eps) * count.sum()
    sums = gamma * torch.cat([codebook[:2], torch.zeros(1, 2)]) + (1 - gamma) * torch.stack(
        [vectors[0] + vectors[2], vectors[1] + vectors[3], torch.zeros(2)]
    )
    torch.testing.assert_close(vq.codebook, sums / smoothed[:, None])


def test_eval_mode_leaves_the_codebook_alone():
    torch.manual_seed(0)
    vq = quantizer_with_codebook(torch.randn(8, 3), dead_code_steps=1).eval()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 3, 6))
    for key, value in vq.state_dict().items():
        assert torch.equal(value, state[key]), key


def clustered_latents(num_clusters: int, dim: int, per_cluster: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = 5 * torch.randn(num_clusters, dim, generator=generator)
    vectors = centres.repeat_interleave(per_cluster, 0) + 0.1 * torch.randn(
        num_clusters * per_cluster, dim, generator=generator
    )
    return rearrange(vectors, "(b t) d -> b d t", b=num_clusters)


def test_kmeans_init_lowers_quantisation_error():
    torch.manual_seed(0)
    z = clustered_latents(num_clusters=8, dim=4, per_cluster=32)
    errors = {}
    for kmeans_init in (True, False):
        vq = VectorQuantizer(dim=4, codebook_size=8, kmeans_init=kmeans_init, ema=False)
        assert bool(vq.initialized) is not kmeans_init
        vq.train()(z)
        assert bool(vq.initialized)
        vq.eval()
        errors[kmeans_init] = torch.mean((vq(z).z - z) ** 2).item()
    # Lloyd from random starts may merge two clusters, but it still beats the tiny uniform init by far
    assert errors[True] < 0.25 * errors[False]


def test_kmeans_init_happens_once_and_handles_fewer_vectors_than_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=3, codebook_size=16, ema=False, kmeans_iters=3)
    z = torch.randn(1, 3, 5)  # 5 vectors for 16 codes: starting points drawn with replacement
    vq.train()(z)
    assert torch.isfinite(vq.codebook).all()
    assert vq.encode(z).unique().numel() <= 5
    after_init = vq.codebook.detach().clone()
    vq(torch.randn(1, 3, 5) + 10)
    assert torch.equal(vq.codebook.detach(), after_init)  # no EMA, no re-init


@pytest.mark.parametrize("ema", [True, False])
def test_dead_codes_are_reseeded_from_the_batch(ema):
    torch.manual_seed(0)
    codebook = torch.cat([torch.zeros(1, 3), torch.full((1, 3), 2.0), torch.full((6, 3), 100.0)])
    vq = quantizer_with_codebook(codebook, ema=ema, dead_code_steps=2)
    z = latents_for_codes(vq, torch.tensor([[0, 1, 0, 1, 0, 1]]), noise=0.1)
    vq.train()
    out = vq(z)
    assert out.stats["restarts"].item() == 0
    assert torch.equal(vq.steps_unused, torch.tensor([0, 0, 1, 1, 1, 1, 1, 1]))
    out = vq(z)
    assert out.stats["restarts"].item() == 6
    vectors = flatten(z)
    for code in range(2, 8):
        assert (vq.codebook[code] == vectors).all(dim=1).any(), code
    torch.testing.assert_close(vq.ema_sum[2:], vq.codebook[2:].detach())
    assert torch.equal(vq.ema_count[2:], torch.ones(6))
    assert torch.equal(vq.steps_unused, torch.zeros(8, dtype=torch.long))


def test_codes_below_a_share_of_the_usage_are_reseeded_from_recent_latents():
    torch.manual_seed(0)
    codebook = torch.cat([torch.zeros(1, 3), torch.full((1, 3), 2.0), torch.full((6, 3), 100.0)])
    vq = quantizer_with_codebook(codebook, dead_code_threshold=0.6, usage_decay=0.5, restart_pool=4)
    z = latents_for_codes(vq, torch.tensor([[0, 1, 0, 1, 0, 1]]), noise=0.1)
    out = vq.train()(z)
    # shares start uniform (1/8); codes 0 and 1 took half the rows each: 0.5 * 1/8 + 0.5 * 1/2 = 0.3125;
    # the other six 0.5 * 1/8 = 0.0625, under 0.6 / 8 = 0.075: dead, re-seeded and back to 1/8
    assert out.stats["restarts"].item() == 6
    assert torch.allclose(vq.usage_share, torch.tensor([0.3125] * 2 + [0.125] * 6))
    pool = vq.pool.clone()
    assert vq.pool_filled.item() == 1  # a quarter of the 4-row pool renewed from this batch
    assert (pool[0] == flatten(z)).all(dim=1).any()  # one of the batch's latents
    for code in range(2, 8):  # from the pool: the one row it holds
        assert torch.equal(vq.codebook[code], pool[0]), code


def test_usage_counts_accumulate_across_calls():
    vq = quantizer_with_codebook(10 * torch.eye(8)).eval()
    first_half = latents_for_codes(vq, torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]]))
    second_half = latents_for_codes(vq, torch.tensor([[4, 5, 6, 7]]))

    out = vq(first_half)
    assert out.stats["usage"].item() == 0.5
    assert out.stats["perplexity"].item() == pytest.approx(4.0)
    assert vq.usage_stats() == pytest.approx({"used_fraction": 0.5, "perplexity": 4.0})

    vq.encode(second_half)
    vq.encode(second_half)  # now every code was used twice: uniform over 8
    assert vq.usage_stats() == pytest.approx({"used_fraction": 1.0, "perplexity": 8.0})

    vq.reset_usage()
    assert vq.usage_stats() == {"used_fraction": 0.0, "perplexity": 0.0}
    vq.encode(latents_for_codes(vq, torch.tensor([[0, 0, 0, 1]])))
    probs = torch.tensor([0.75, 0.25])
    assert vq.usage_stats()["perplexity"] == pytest.approx(math.exp(-(probs * probs.log()).sum().item()))
    assert "usage_counts" not in vq.state_dict()


@pytest.mark.parametrize("grid", GRIDS)
def test_encode_decode_round_trip_matches_forward(grid):
    torch.manual_seed(0)
    vq = quantizer_with_codebook(torch.randn(16, 4)).eval()
    z = torch.randn(2, 4, *grid)
    out = vq(z)
    codes = vq.encode(z)
    assert torch.equal(codes, out.codes)
    assert torch.equal(vq.decode(codes), out.z)
    assert vq.codebook_sizes() == [16]


def test_codebook_is_a_parameter_only_without_ema():
    assert "codebook" in dict(VectorQuantizer(dim=2, codebook_size=4, ema=False).named_parameters())
    ema_quantizer = VectorQuantizer(dim=2, codebook_size=4, ema=True)
    assert list(ema_quantizer.parameters()) == []
    buffers = {"codebook", "ema_count", "ema_sum", "initialized", "steps_unused"}
    assert buffers <= set(ema_quantizer.state_dict())


def test_rejects_wrong_shapes():
    vq = VectorQuantizer(dim=4, codebook_size=8)
    for shape in [(2, 4), (2, 3, 5), (1, 4, 1, 1, 1, 1)]:
        with pytest.raises(ValueError):
            vq(torch.zeros(shape))


def test_residual_vq_error_decreases_with_more_quantizers():
    torch.manual_seed(0)
    z = torch.randn(4, 6, 64)
    rvq = ResidualVQ(dim=6, num_quantizers=4, codebook_size=16, kmeans_iters=5)
    rvq.train()(z)
    rvq.eval()
    codes = rvq.encode(z)
    assert codes.shape == (4, 4, 64)
    errors = [torch.mean((rvq.decode(codes[:, :levels]) - z) ** 2).item() for levels in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * torch.mean(z**2).item()


@pytest.mark.parametrize("grid", GRIDS)
def test_residual_vq_shapes_gradients_and_round_trip(grid):
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=3, num_quantizers=3, codebook_size=8, beta=0.0, kmeans_iters=2, dead_code_steps=5)
    assert rvq.codebook_sizes() == [8, 8, 8] and rvq.discrete
    z = torch.randn(2, 3, *grid, requires_grad=True)
    out = rvq.train()(z)
    assert out.codes.shape == (2, 3, *grid)
    assert out.stats["restarts"].shape == () and "perplexity/q2" in out.stats
    upstream = torch.randn_like(z)
    ((out.z * upstream).sum() + out.loss).backward()
    torch.testing.assert_close(z.grad, upstream)

    rvq.eval()
    rvq.reset_usage()
    out = rvq(z)
    assert torch.equal(rvq.encode(z), out.codes)
    assert torch.equal(rvq.decode(out.codes), out.z)
    stats = rvq.usage_stats()
    per_layer = [stats[f"used_fraction/q{index}"] for index in range(3)]
    assert stats["used_fraction"] == pytest.approx(sum(per_layer) / 3)
    rvq.reset_usage()
    assert rvq.usage_stats()["used_fraction"] == 0.0


def test_residual_vq_loss_is_the_sum_of_layer_losses():
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=2, num_quantizers=2, codebook_size=4, kmeans_init=False, ema=False).eval()
    z = torch.randn(1, 2, 10)
    out = rvq(z)
    first = rvq.layers[0](z)
    second = rvq.layers[1](z - first.z)
    torch.testing.assert_close(out.loss, first.loss + second.loss)


@settings(max_examples=25, deadline=None)
@given(
    rank=st.integers(1, 3),
    data=st.data(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    residual=st.booleans(),
    train_first=st.booleans(),
)
def test_property_shapes_dtypes_codes_and_round_trip(rank, data, dtype, residual, train_first):
    grid = tuple(data.draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    batch = data.draw(st.integers(1, 3))
    dim = data.draw(st.integers(1, 4))
    codebook_size = data.draw(st.integers(1, 12))
    seed = data.draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    common = {"dim": dim, "codebook_size": codebook_size, "kmeans_iters": 2, "dead_code_steps": 1}
    bottleneck = ResidualVQ(num_quantizers=2, **common) if residual else VectorQuantizer(**common)
    z = torch.randn(batch, dim, *grid).to(dtype)

    if train_first:
        out = bottleneck.train()(z)
        assert out.z.shape == z.shape and out.z.dtype == dtype
        assert torch.isfinite(out.loss)
    out = bottleneck.eval()(z)
    assert out.z.shape == z.shape and out.z.dtype == dtype
    expected_codes_shape = (batch, 2, *grid) if residual else (batch, *grid)
    assert out.codes.shape == expected_codes_shape and out.codes.dtype == torch.int64
    assert out.codes.min() >= 0 and out.codes.max() < codebook_size
    codes = bottleneck.encode(z)
    assert torch.equal(codes, out.codes)
    assert torch.equal(bottleneck.decode(codes).to(dtype), out.z)


@pytest.mark.parametrize("ema", [True, False])
def test_factorized_lookup_is_the_cosine_nearest_code_in_the_projection(ema):
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=16, codebook_size=64, code_dim=4, normalize=True, ema=ema, kmeans_init=False)
    z = torch.randn(3, 16, 10)
    projected = torch.einsum("bdt,kd->btk", z, vq.project_in.weight) + vq.project_in.bias
    codebook = torch.nn.functional.normalize(vq.codebook.detach(), dim=1)
    cosine = torch.nn.functional.normalize(projected, dim=-1) @ codebook.t()  # (B, T, K)
    assert torch.equal(vq.encode(z), cosine.argmax(-1))
    # decode: the unit-length code vector, projected back to D
    codes = vq.encode(z)
    expected = (
        torch.einsum("btk,dk->bdt", codebook[codes], vq.project_out.weight) + vq.project_out.bias[:, None]
    )
    assert torch.allclose(vq.decode(codes), expected, atol=1e-6)
    out = vq.train()(z)
    assert torch.equal(out.codes, codes) and out.z.shape == z.shape


def test_factorized_codebook_stays_on_the_unit_sphere_through_kmeans_ema_and_restarts():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=8, codebook_size=16, code_dim=3, normalize=True, dead_code_steps=1).train()
    for _ in range(3):
        vq(torch.randn(4, 8, 12))
    assert torch.allclose(vq.codebook.norm(dim=1), torch.ones(16), atol=1e-5)


def test_factorized_residual_vq_trains_its_projections():
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, code_dim=3, normalize=True).train()
    z = torch.randn(2, 8, 6, requires_grad=True)
    out = rvq(z)
    (out.z.square().sum() + out.loss).backward()
    for layer in rvq.layers:
        assert layer.project_in.weight.grad.abs().sum() > 0
        assert layer.project_out.weight.grad.abs().sum() > 0
    assert z.grad.abs().sum() > 0
    rvq.eval()
    assert torch.allclose(rvq.decode(rvq.encode(z.detach())), rvq(z.detach()).z, atol=1e-5)
