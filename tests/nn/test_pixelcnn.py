import itertools
import math

import pytest
import torch
from einops import reduce
from torch import nn

from vqtoolkit.nn.pixelcnn import MaskedConv, PixelCNN, raster_mask
from vqtoolkit.nn.pixelcnn_sampling import _Cache, bits_per_code, negative_log_likelihood, sample


@pytest.fixture(autouse=True)
def one_thread():
    # tiny convolutions on a shared 2-core machine are far faster without OpenMP
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(rank: int, **options) -> PixelCNN:
    torch.manual_seed(0)
    options = {"codebook_size": 7, "hidden": 16, "layers": 3, **options}
    return PixelCNN(rank=rank, **options).double()


def positions(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*map(range, grid)))


def expected_field(x: tuple, grid: tuple, layers: int, kernel: int, cycle: int = 10) -> set:
    """The receptive field documented in vqtoolkit.nn.pixelcnn, computed from its formula."""
    p = kernel // 2
    if len(grid) == 1:
        reach = p + p * sum(2 ** ((layer - 1) % cycle) for layer in range(1, layers))
        return {(y,) for y in range(max(0, x[0] - reach), x[0])}
    r = layers * p
    field = set()
    for y in positions(grid):
        if y >= x:
            continue
        a = next(i for i in range(len(x)) if y[i] != x[i])
        if x[a] - y[a] <= r and all(abs(y[b] - x[b]) <= r for b in range(a + 1, len(x))):
            field.add(y)
    return field


def gradient_support(net, x: torch.Tensor) -> dict[tuple, set]:
    """For each output position i, the input positions j where the gradient of outputs[..., i] is non-zero."""
    x = x.detach().requires_grad_()
    out = net(x)
    grid = tuple(x.shape[2:])
    supports = {}
    for i in positions(grid):
        (grad,) = torch.autograd.grad(out[(slice(None), slice(None), *i)].sum(), x, retain_graph=True)
        nonzero = reduce(grad.abs(), "b c ... -> ...", "sum") > 0
        supports[i] = {tuple(j) for j in nonzero.nonzero().tolist()}
    return supports


# --- masks ---------------------------------------------------------------------------------------------


def test_raster_masks_of_rank_1_2_3():
    assert raster_mask((5,), "A").tolist() == [1, 1, 0, 0, 0]
    assert raster_mask((5,), "B").tolist() == [1, 1, 1, 0, 0]
    assert raster_mask((3, 3), "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert raster_mask((3, 3), "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    for mask_type in "AB":
        mask = raster_mask((3, 3, 3), mask_type)
        assert mask[0].eq(1).all() and mask[2].eq(0).all()  # earlier frame all seen, later frame none
        assert torch.equal(mask[1], raster_mask((3, 3), mask_type))
    assert raster_mask((3, 3, 3), "A")[1, 1, 1] == 0 and raster_mask((3, 3, 3), "B")[1, 1, 1] == 1
    with pytest.raises(ValueError):
        raster_mask((4, 3), "A")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_masked_conv_applies_its_mask(rank):
    torch.manual_seed(0)
    conv = MaskedConv(rank, 2, 3, kernel=3, mask_type="A").double()
    x = torch.randn(1, 2, *(5,) * rank, dtype=torch.float64)
    reference = conv.conv.__class__(2, 3, 3, padding=1).double()
    with torch.no_grad():
        reference.weight.copy_(conv.conv.weight * conv.mask)
        reference.bias.copy_(conv.conv.bias)
    torch.testing.assert_close(conv(x), reference(x))


def test_plain_masked_conv_stack_has_the_blind_spot_the_gated_stacks_avoid():
    torch.manual_seed(0)
    plain = nn.Sequential(MaskedConv(2, 4, 4, 3, "A"), nn.Tanh(), MaskedConv(2, 4, 4, 3, "B")).double()
    support = gradient_support(plain, torch.randn(2, 4, 6, 6, dtype=torch.float64))[3, 2]
    # the row above, two to the right, is unseen although the position above that is seen: the blind spot
    assert (1, 4) in support and (2, 4) not in support

    model = small_model(2, layers=2)
    support = gradient_support(model.forward_embedded, model.embed_codes(torch.randint(7, (2, 6, 6))))[3, 2]
    assert {(1, 4), (2, 4)} <= support


# --- causality -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rank, grid, options",
    [
        (1, (20,), {"layers": 4, "kernel": 3}),
        (1, (20,), {"layers": 4, "kernel": 3, "dilation_cycle": 2}),
        (1, (20,), {"layers": 3, "kernel": 5}),
        (2, (6, 7), {"layers": 2, "kernel": 3}),
        (2, (6, 7), {"layers": 1, "kernel": 5}),
        (2, (5, 9), {"layers": 2, "kernel": 3, "num_classes": 3}),
        (3, (3, 4, 5), {"layers": 2, "kernel": 3}),
        (3, (4, 3, 4), {"layers": 1, "kernel": 3}),
    ],
)
def test_each_output_sees_exactly_the_earlier_positions_of_its_receptive_field(rank, grid, options):
    model = small_model(rank, **options)
    labels = torch.tensor([0, 2]) if options.get("num_classes") else None
    embedded = model.embed_codes(torch.randint(7, (2, *grid)))
    supports = gradient_support(lambda e: model.forward_embedded(e, labels), embedded)
    layers, kernel = options["layers"], options["kernel"]
    cycle = options.get("dilation_cycle", 10)
    for i, support in supports.items():
        assert all(j < i for j in support), f"output {i} depends on a later position"
        assert support == expected_field(i, grid, layers, kernel, cycle), f"output {i}"


# --- sampling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rank, grid, options",
    [
        (1, (12,), {}),
        (1, (10,), {"kernel": 5, "dilation_cycle": 2}),
        (2, (5, 6), {}),
        (2, (4, 5), {"kernel": 5, "layers": 2}),
        (2, (5, 6), {"num_classes": 3}),
        (3, (3, 4, 4), {"layers": 2}),
    ],
)
def test_cached_sampler_draws_the_same_codes_as_the_naive_one(rank, grid, options):
    model = small_model(rank, **options)
    labels = torch.tensor([0, 2, 1]) if options.get("num_classes") else None
    samples = [
        sample(model, (3, *grid), labels=labels, generator=torch.Generator().manual_seed(1), cached=cached)
        for cached in (False, True)
    ]
    assert samples[0].shape == (3, *grid) and samples[0].dtype == torch.long
    assert torch.equal(samples[0], samples[1])
    assert samples[0].unique().numel() > 2


@pytest.mark.parametrize("rank, grid", [(1, (9,)), (2, (4, 5)), (3, (3, 3, 4))])
def test_cached_logits_equal_the_full_forward(rank, grid):
    model = small_model(rank, num_classes=2).eval()
    codes, labels = torch.randint(7, (2, *grid)), torch.tensor([1, 0])
    full = model(codes, labels)
    cache = _Cache(model, 2, grid, labels)
    with torch.no_grad():
        for x in positions(grid):
            expected = full[(slice(None), slice(None), *x)]
            torch.testing.assert_close(cache.logits(x), expected, rtol=0, atol=1e-12)
            cache.record(x, codes[(slice(None), *x)])


def test_class_labels_change_the_samples():
    model = small_model(2, num_classes=3)
    draws = [
        sample(model, (4, 4, 4), labels=torch.full((4,), label), generator=torch.Generator().manual_seed(0))
        for label in (0, 2)
    ]
    assert not torch.equal(*draws)


def test_sampling_restores_training_mode_and_threads():
    model = small_model(1, dropout=0.5).train()
    torch.set_num_threads(2)
    sample(model, (2, 5), generator=torch.Generator().manual_seed(0))
    assert model.training and torch.get_num_threads() == 2


def test_lower_temperature_gives_lower_entropy_samples():
    model = small_model(1, codebook_size=8)
    last = model.head[-1]
    with torch.no_grad():  # logits independent of the input: every position draws from one distribution
        last.weight.zero_()
        last.bias.copy_(torch.linspace(0, 3, 8))
    entropies = []
    for temperature in (0.5, 1.0, 2.0):
        codes = sample(model, (32, 16), temperature=temperature, generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(codes.flatten(), minlength=8).double() / codes.numel()
        entropies.append(-torch.special.xlogy(freq, freq).sum().item())
    assert entropies[0] < entropies[1] < entropies[2]


# --- likelihood ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank, grid", [(1, (8,)), (2, (4, 5)), (3, (2, 3, 3))])
def test_uniform_logits_give_n_log_k(rank, grid):
    model = small_model(rank)
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    codes = torch.randint(7, (3, *grid))
    ones = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(negative_log_likelihood(model, codes), ones * math.prod(grid) * math.log(7))
    torch.testing.assert_close(bits_per_code(model, codes), ones * math.log2(7))


def test_log_likelihood_sums_the_log_probabilities_of_the_codes():
    model = small_model(2)
    codes = torch.randint(7, (2, 3, 4))
    log_probs = torch.log_softmax(model(codes), dim=1).gather(1, codes[:, None])
    torch.testing.assert_close(negative_log_likelihood(model, codes), -log_probs.sum(dim=(1, 2, 3)))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        PixelCNN(7, rank=4)
    with pytest.raises(ValueError):
        PixelCNN(7, rank=2, kernel=4)
    model = small_model(2, num_classes=3)
    with pytest.raises(ValueError):
        model(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(2, 4, 4, dtype=torch.long))
