"""A discrete bottleneck is checked against its contract when a model is built: one line naming the
bottleneck, its plugin and what is missing, never a traceback later in `vqt tokenize`."""

from __future__ import annotations

import pytest
import torch

from vqtoolkit.config import RecipeError
from vqtoolkit.model import check_bottleneck
from vqtoolkit.nn.base import Bottleneck, BottleneckOutput
from vqtoolkit.nn.quantize import VectorQuantizer


class HalfWritten(Bottleneck):
    """Written from an older guide: encode and decode, but no codebook_sizes or usage statistics."""

    discrete = True

    def forward(self, z):
        return BottleneckOutput(z, z.new_zeros(()), z.argmax(1))

    def encode(self, z):
        return z.argmax(1)

    def decode(self, codes):
        return codes.float()[:, None]


class NoSizes(HalfWritten):
    def codebook_sizes(self):
        return []

    def usage_stats(self):
        return {}

    def reset_usage(self):
        pass


def test_a_discrete_bottleneck_missing_methods_is_one_line_naming_them():
    with pytest.raises(RecipeError) as error:
        check_bottleneck(HalfWritten(), "half", "vqt_half")
    assert str(error.value) == (
        "bottleneck 'half' of plugin 'vqt_half' is discrete but does not implement codebook_sizes, "
        "usage_stats, reset_usage (see the bottleneck contract in docs/plugins.md)"
    )
    with pytest.raises(RecipeError, match=r"codebook_sizes\(\) must list one positive integer per codebook"):
        check_bottleneck(NoSizes(), "nosizes", "vqt_half")
    with pytest.raises(RecipeError, match="is not a vqtoolkit.nn.base.Bottleneck"):
        check_bottleneck(torch.nn.Identity(), "identity", "vqt_half")


def test_the_built_in_bottlenecks_meet_the_contract():
    check_bottleneck(VectorQuantizer(8, 16), "vq", "vqtoolkit.builtins")  # no error
