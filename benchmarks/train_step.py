"""Training step of the image VQ-VAE recipe: vqtoolkit's Trainer.train_step against a plain fp32 eager
reference written the way the seed's code is written, on the same batch, from the same weights.

    python benchmarks/train_step.py                  # 20 interleaved repeats of each
    python benchmarks/train_step.py --quick --json train_step.json
    python benchmarks/train_step.py train.channels_last=true      # extra arguments: recipe overrides

The model is recipes/image_vqvae.yaml's (the VQ-VAE paper's conv encoder/decoder, hidden 128, K = 512,
D = 64, EMA), batch 64 of the shipped Fashion-MNIST sample (28 x 28). The reference is an nn.Module around
the same encoder and decoder (copied after the Trainer's first step, so the weights and codebook match)
with the VQ layer written as the lecture writes it: full N x K distances, argmin, one-hot products, the
EMA equations, then F.mse_loss + beta * commitment, torch.optim.Adam, fp32, eager. Before timing, one
forward pass of each from the same state must give the same loss (within 1e-4 in fp32, 2e-2 in bf16).

On CUDA the Trainer runs with all the recipe's speed switches (train.precision=bf16, train.channels_last,
train.compile; its AdamW is fused on CUDA) unless --as-shipped; model FLOPs utilisation is the FLOPs of
one forward + backward (torch.utils.flop_counter) per second over the GPU's dense bf16 peak. On CPU bf16
autocast does not apply (the Trainer only autocasts on CUDA), so the recipe runs as shipped: fp32 eager.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from peers import machine
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from vqtoolkit.config import load_recipe
from vqtoolkit.rundir import resolve_device
from vqtoolkit.train.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "image_vqvae.yaml"
SPEED_SWITCHES = ["train.precision=bf16", "train.channels_last=true", "train.compile=true"]
# dense bf16 tensor-core peaks, FLOP/s; the first name contained in the device's name counts
PEAK_BF16 = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
}


class SeedVQVAE(nn.Module):
    """The recipe's encoder and decoder around a VQ layer written the way the seed's lecture writes it."""

    def __init__(self, Encoder: nn.Module, Decoder: nn.Module, embedding: Tensor, decay: float):
        super().__init__()
        self.Encoder = Encoder
        self.Decoder = Decoder
        self.decay = decay
        self.register_buffer("embedding", embedding.clone())
        self.register_buffer("N", torch.ones(len(embedding)))
        self.register_buffer("m", embedding.clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z_e = self.Encoder(x)
        flat = rearrange(z_e, "b d h w -> (b h w) d")
        e = self.embedding
        distances = (flat**2).sum(1, keepdim=True) - 2 * flat @ e.t() + (e**2).sum(1)
        k = torch.argmin(distances, dim=1)
        one_hot = F.one_hot(k, len(e)).float()
        e_k = one_hot @ e
        if self.training:
            # N_i <- g N_i + (1 - g) n_i ;  m_i <- g m_i + (1 - g) sum_j z_ij ;  e_i = m_i / N_i
            with torch.no_grad():
                self.N.copy_(self.decay * self.N + (1 - self.decay) * one_hot.sum(0))
                self.m.copy_(self.decay * self.m + (1 - self.decay) * one_hot.t() @ flat)
                self.embedding.copy_(self.m / self.N[:, None])
        commitment = F.mse_loss(flat, e_k.detach())
        z_q = flat + (e_k - flat).detach()
        b, _, h, w = z_e.shape
        x_hat = self.Decoder(rearrange(z_q, "(b h w) d -> b d h w", b=b, h=h, w=w))
        return x_hat, commitment


def seed_step(model: SeedVQVAE, optimizer: torch.optim.Optimizer, x: Tensor, beta: float) -> float:
    optimizer.zero_grad()
    x_hat, commitment = model(x)
    loss = F.mse_loss(x_hat, x) + beta * commitment
    loss.backward()
    optimizer.step()
    return loss.item()


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats after 2 warm-up steps")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each (compile happens here)")
    parser.add_argument("--as-shipped", action="store_true", help="on CUDA too, leave the speed switches off")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for the Trainer")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    switches = SPEED_SWITCHES if device.type == "cuda" and not args.as_shipped else []
    warmup, repeats = (2, 5) if args.quick else (args.warmup, args.repeats)

    with tempfile.TemporaryDirectory(prefix="vqt-train-step-") as tmp:
        overrides = [f"train.device={device.type}", "train.picture_every=0", *switches, *args.overrides]
        recipe = load_recipe(RECIPE, overrides)
        trainer = Trainer(recipe, run_dir=Path(tmp) / "run")
        batch = torch.stack([trainer.train_set[i] for i in range(recipe.train.batch_size)]).to(device)
        trainer.train_step(batch)  # k-means init of the codebook, as in any run's first step
        model, vq = trainer.model, trainer.model.bottleneck
        plain = [
            copy.deepcopy(m).to(memory_format=torch.contiguous_format) for m in (model.encoder, model.decoder)
        ]
        reference = SeedVQVAE(*plain, vq.codebook.detach(), vq.decay).to(device)
        reference_optimizer = torch.optim.Adam(reference.parameters(), lr=recipe.optim.lr)

        with torch.no_grad(), trainer.autocast:  # same state, same batch: same loss
            ours_loss = copy.deepcopy(model)(batch).loss.item()
        with torch.no_grad():
            x_hat, commitment = copy.deepcopy(reference)(batch)
            reference_loss = (F.mse_loss(x_hat, batch) + vq.beta * commitment).item()
        loss_diff = abs(ours_loss - reference_loss) / abs(reference_loss)
        same_loss = loss_diff <= (
            2e-2 if recipe.train.precision == "bf16" and device.type == "cuda" else 1e-4
        )

        with FlopCounterMode(display=False) as counter:  # model FLOPs: one fp32 forward + backward
            copy.deepcopy(model)(batch).loss.backward()
        flops = counter.get_total_flops()

        runs = {
            "vqtoolkit": lambda: trainer.train_step(batch),
            "reference": lambda: seed_step(reference, reference_optimizer, batch, vq.beta),
        }
        for _ in range(warmup):
            for run in runs.values():
                run()
        times = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved: ours, reference, ours, ...
            for name, run in runs.items():
                times[name].append(timed(run, device))
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    speedup = ms["reference"] / ms["vqtoolkit"]
    gpu, peak = peak_flops(device)
    tflops = {name: flops / (value / 1000) / 1e12 for name, value in ms.items()}
    mfu = {name: value * 1e12 / peak for name, value in tflops.items()} if peak else None

    print(f"{'':14}{'ms/step':>10}{'TFLOP/s':>10}{'MFU':>8}")
    for name in runs:
        print(f"{name:14}{ms[name]:10.1f}{tflops[name]:10.3f}{f'{mfu[name]:.1%}' if mfu else 'n/a':>8}")
    print(f"model FLOPs per step (forward + backward): {flops / 1e9:.1f} GFLOP; peak: {gpu} {peak or 'n/a'}")
    print(f"same loss from the same state: {same_loss} (relative difference {loss_diff:.1e})")
    cfg = recipe.train
    setup = (
        f"precision {cfg.precision}, channels_last {cfg.channels_last}, compile {cfg.compile}, "
        f"{'fused ' if device.type == 'cuda' else ''}AdamW"
    )
    if device.type == "cpu":
        setup += "; bf16 autocast applies on CUDA only"
    mfu_text = f", MFU {mfu['vqtoolkit']:.1%} of {gpu}'s bf16 peak" if mfu else ""
    print(
        f"image VQ-VAE train step: {speedup:.2f}x vs the fp32 eager reference ({setup}{mfu_text}; batch "
        f"{cfg.batch_size} of 28x28, {torch.get_num_threads()} threads, {device.type})"
    )
    if args.json:
        report = {
            "benchmark": "train_step",
            "speedup_vs_reference": speedup,
            "ms_per_step": ms,
            "tflops": tflops,
            "mfu": mfu,
            "model_flops_per_step": flops,
            "peak_bf16_flops": peak,
            "same_loss": same_loss,
            "loss_relative_difference": loss_diff,
            "overrides": overrides,
            "warmup": warmup,
            "repeats": repeats,
            "times_ms": {name: [1000 * t for t in values] for name, values in times.items()},
            "machine": machine(device.type),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if same_loss else 1


if __name__ == "__main__":
    sys.exit(main())
