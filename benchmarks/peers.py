"""The peer the benchmarks measure against: vector-quantize-pytorch's `VectorQuantize` behind vqtoolkit's
Bottleneck interface, and the machine facts every benchmark reports."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version

import torch
from einops import pack, rearrange, unpack
from torch import Tensor

import vqtoolkit
from vqtoolkit.config import Recipe
from vqtoolkit.model import Autoencoder, build_model
from vqtoolkit.nn.base import Bottleneck, BottleneckOutput
from vqtoolkit.nn.quantize import _perplexity, usage_from_counts

PEER = "vector-quantize-pytorch"


class PeerVQ(Bottleneck):
    """vector-quantize-pytorch's VectorQuantize behind vqtoolkit's Bottleneck interface."""

    discrete = True

    def __init__(self, dim: int, codebook_size: int, decay: float, beta: float):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.codebook_size = codebook_size
        self.vq = VectorQuantize(dim=dim, codebook_size=codebook_size, decay=decay, commitment_weight=beta)
        self.register_buffer(
            "usage_counts", torch.zeros(codebook_size, dtype=torch.float64), persistent=False
        )

    def codebook_sizes(self) -> list[int]:
        return [self.codebook_size]

    def _quantize(self, z: Tensor, **kwargs) -> tuple[Tensor, Tensor, Tensor]:
        rows, shape = pack([rearrange(z, "b d ... -> b ... d")], "b * d")
        quantized, codes, loss = self.vq(rows, **kwargs)
        [quantized] = unpack(quantized, shape, "b * d")
        [codes] = unpack(codes, shape, "b *")
        self.usage_counts += torch.bincount(codes.flatten(), minlength=self.codebook_size)
        return rearrange(quantized, "b ... d -> b d ..."), codes, loss.sum()

    def forward(self, z: Tensor) -> BottleneckOutput:
        z_q, codes, loss = self._quantize(z)
        counts = torch.bincount(codes.flatten(), minlength=self.codebook_size).float()
        commit = (z_q.detach() - z.detach()).pow(2).mean()
        stats = {
            "commit_loss": commit,
            "perplexity": _perplexity(counts),
            "usage": (counts > 0).float().mean(),
        }
        return BottleneckOutput(z=z_q, loss=loss, codes=codes, stats=stats)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        return self._quantize(z, freeze_codebook=True)[1]

    def decode(self, codes: Tensor) -> Tensor:
        return rearrange(self.vq.get_output_from_indices(codes), "b ... d -> b d ...")

    def reset_usage(self) -> None:
        self.usage_counts.zero_()

    def usage_stats(self) -> dict[str, float]:
        return usage_from_counts(self.usage_counts)


def machine(device: str) -> dict:
    info = {
        "torch": torch.__version__,
        "vqtoolkit": vqtoolkit.__version__,
        PEER: version(PEER),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def paired_model(recipe: Recipe, peer: bool) -> Autoencoder:
    """The recipe's model, seeded so ours and the peer's start from the same encoder/decoder weights;
    with `peer` its quantizer is swapped for vector-quantize-pytorch's (same K, D, decay, beta)."""
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe)
    if peer:
        ours = model.bottleneck
        model.bottleneck = PeerVQ(ours.dim, ours.codebook_size, ours.decay, ours.beta)
    return model
