"""The peer the benchmarks measure against: vector-quantize-pytorch's quantizers (VectorQuantize,
ResidualVQ, FSQ, LFQ) behind vqtoolkit's Bottleneck interface, and the machine facts every benchmark
reports."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch
from einops import pack, rearrange, unpack
from torch import Tensor

import vqtoolkit
from vqtoolkit.config import Recipe
from vqtoolkit.model import Autoencoder, build_model
from vqtoolkit.nn.base import Bottleneck, BottleneckOutput
from vqtoolkit.nn.quantize import _perplexity, run_decay, staged_usage, usage_from_counts

PEER = "vector-quantize-pytorch"


def peer_module(ours: Bottleneck) -> tuple[torch.nn.Module, list[int]]:
    """vector-quantize-pytorch's implementation of the method of our bottleneck `ours`, configured alike
    and with its own equivalent features on (k-means init and EMA dead-code expiry for VQ), and the
    codebook sizes of its codes."""
    import vector_quantize_pytorch as vqp

    name = type(ours).__name__
    if name == "VectorQuantizer":
        module = vqp.VectorQuantize(
            dim=ours.dim, codebook_size=ours.codebook_size, decay=ours.decay, commitment_weight=ours.beta,
            kmeans_init=True, threshold_ema_dead_code=2,
        )  # fmt: skip
        return module, [ours.codebook_size]
    if name == "ResidualVQ":
        first = ours.layers[0]
        module = vqp.ResidualVQ(
            dim=ours.dim, num_quantizers=len(ours.layers), codebook_size=first.codebook_size,
            decay=first.decay, commitment_weight=first.beta, kmeans_init=True, threshold_ema_dead_code=2,
        )  # fmt: skip
        return module, [first.codebook_size] * len(ours.layers)
    if name == "FSQ":
        return vqp.FSQ(levels=[int(x) for x in ours.levels.tolist()], dim=ours.dim), [ours.size]
    if name == "LFQ":
        module = vqp.LFQ(
            dim=ours.dim, codebook_size=2**ours.bits, entropy_loss_weight=ours.entropy_weight,
            commitment_loss_weight=ours.commitment_weight, diversity_gamma=ours.diversity,
        )  # fmt: skip
        return module, [2**ours.bits]
    raise ValueError(f"no peer for the {name} bottleneck")


class PeerBottleneck(Bottleneck):
    """A vector-quantize-pytorch quantizer behind vqtoolkit's Bottleneck interface (see `peer_module`)."""

    discrete = True

    def __init__(self, ours: Bottleneck):
        super().__init__()
        self.dim = ours.dim
        self.peer, self.sizes = peer_module(ours)
        counts = torch.zeros(len(self.sizes), max(self.sizes), dtype=torch.float64)
        self.register_buffer("usage_counts", counts, persistent=False)

    def codebook_sizes(self) -> list[int]:
        return list(self.sizes)

    def fit_to_run(self, steps: int) -> dict[str, float]:
        """The peer's EMA codebooks get the decay ours get for a run this long."""
        changed = {}
        for module in self.peer.modules():
            if hasattr(module, "embed_avg"):  # an EMA codebook (EuclideanCodebook, CosineSimCodebook)
                decay, module.decay = module.decay, run_decay(module.decay, steps)
                changed |= {"decay": module.decay} if module.decay != decay else {}
        return changed

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """(quantized, codes (b, n, q), loss, each stage's code counts), the counts added to the usage."""
        rows, shape = pack([rearrange(z, "b d ... -> b ... d")], "b * d")
        out = self.peer(rows)
        quantized, codes = out[0], out[1]
        loss = out[2].sum() if len(out) > 2 else z.new_zeros(())
        codes = codes.reshape(*codes.shape[:2], -1)  # (b, n, q) for residual VQ, else (b, n, 1)
        counts = [
            torch.bincount(codes[..., q].flatten(), minlength=size) for q, size in enumerate(self.sizes)
        ]
        for stage, stage_counts in enumerate(counts):
            self.usage_counts[stage, : self.sizes[stage]] += stage_counts
        [quantized] = unpack(quantized, shape, "b * d")
        return rearrange(quantized, "b ... d -> b d ..."), codes, loss, [c.float() for c in counts]

    def forward(self, z: Tensor) -> BottleneckOutput:
        z_q, codes, loss, counts = self._quantize(z)
        stats = {
            "commit_loss": (z_q.detach() - z.detach()).pow(2).mean(),
            "perplexity": torch.stack([_perplexity(c) for c in counts]).mean(),
            "usage": torch.stack([(c > 0).float().mean() for c in counts]).mean(),
        }
        return BottleneckOutput(z=z_q, loss=loss, codes=codes, stats=stats)

    def reset_usage(self) -> None:
        self.usage_counts.zero_()

    def usage_stats(self) -> dict[str, float]:
        per_stage = [usage_from_counts(self.usage_counts[q, :size]) for q, size in enumerate(self.sizes)]
        return staged_usage(per_stage)


def machine(device: str = "cpu") -> dict:
    try:
        peer_version = version(PEER)
    except PackageNotFoundError:
        peer_version = "not installed"
    info = {
        "torch": torch.__version__,
        "vqtoolkit": vqtoolkit.__version__,
        PEER: peer_version,
        "load_average": round(os.getloadavg()[0], 2),
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
    with `peer` its quantizer is swapped for vector-quantize-pytorch's implementation of the same method
    (see `peer_module`)."""
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe)
    if peer:
        model.bottleneck = PeerBottleneck(model.bottleneck)
    return model
