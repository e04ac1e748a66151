"""The adversarial part of the autoencoder + adversarial objective: discriminators, their optimizer and
their step, and the generator's adversarial and feature-matching terms."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqtoolkit.adversarial import discriminator_loss, feature_matching, generator_loss, split_verdicts
from vqtoolkit.config import AdversarialConfig, OptimConfig, instantiate
from vqtoolkit.train import distributed


def warmup_steps(optim: OptimConfig, total: int) -> int:
    """`optim.warmup_steps`, but under a cosine schedule at most a tenth of the run: a recipe cut short
    (train.max_steps=100 of one that warms up over 100 steps) would otherwise end while its rate still
    climbs, never train at its full rate nor anneal, and its codebooks would not settle on the encoder's
    last latents. A constant schedule keeps its warm-up, so that extending a run does not change its past."""
    if optim.schedule != "cosine" or not optim.warmup_steps:
        return optim.warmup_steps
    return min(optim.warmup_steps, max(1, total // 10))


def scheduled_lr(optim: OptimConfig, step: int, total: int) -> float:
    """Linear warm-up over `warmup_steps`, then constant or a cosine decay to 0 at `total`."""
    warmup = warmup_steps(optim, total)
    if warmup and step < warmup:
        return optim.lr * (step + 1) / warmup
    if optim.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return optim.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return optim.lr


def clip_norm(parameters, clip: float) -> Tensor:
    return torch.nn.utils.clip_grad_norm_(list(parameters), clip if clip > 0 else float("inf"))


class Discriminators(nn.ModuleList):
    """Several discriminators as one module: the verdicts of all their sub-discriminators, in order."""

    def forward(self, media: Tensor) -> list:
        return [verdict for discriminator in self for verdict in discriminator(media)]


class Adversary:
    """Discriminators trained against the autoencoder from `config.start_step` on."""

    def __init__(self, config: AdversarialConfig, media: tuple[int, int], device: torch.device, ranks,
                 max_steps: int):  # fmt: skip
        """`media` is (channels, grid rank) of what the discriminators judge."""
        self.config, self.max_steps = config, max_steps
        self.discriminators = Discriminators(
            instantiate("discriminators", component, f"adversarial.discriminators.{index}", "", *media)
            for index, component in enumerate(config.discriminators)
        ).to(device)
        self.optimizer = torch.optim.AdamW(
            self.discriminators.parameters(), lr=config.optim.lr, betas=config.optim.betas,
            weight_decay=config.optim.weight_decay, fused=device.type == "cuda" or None,
        )  # fmt: skip
        self.forward = self.discriminators
        if ranks.active:
            self.forward = distributed.data_parallel(self.discriminators, device)

    def active(self, step: int) -> bool:
        return step >= self.config.start_step

    def discriminator_backward(self, real: Tensor, fake: Tensor, step: int) -> tuple[dict, list]:
        """The discriminators' loss on real and (detached) generated media, backpropagated; their gradient
        is clipped but not yet applied. Returns the stats and the verdicts on the real media (reused,
        detached, for feature matching)."""
        for group in self.optimizer.param_groups:
            group["lr"] = scheduled_lr(self.config.optim, step - self.config.start_step, self.max_steps)
        self.optimizer.zero_grad(set_to_none=True)
        # one pass over [real; fake]: data parallelism allows a single forward per backward
        verdicts = self.forward(torch.cat([real, fake.detach()]))
        real_verdicts, fake_verdicts = split_verdicts(verdicts, real.shape[0])
        loss = discriminator_loss(self.config.loss, real_verdicts, fake_verdicts)
        loss.backward()
        norm = clip_norm(self.discriminators.parameters(), self.config.optim.grad_clip)
        detached = [(logits.detach(), [m.detach() for m in maps]) for logits, maps in real_verdicts]
        return {"disc_loss": loss.item(), "disc_grad_norm": norm.item()}, detached

    def generator_terms(self, fake: Tensor, real_verdicts) -> tuple[Tensor, dict]:
        """The weighted adversarial and feature-matching losses of the generated media. The discriminators
        are run without DDP and with their gradients off: this backward pass trains the generator only."""
        self.discriminators.requires_grad_(False)
        try:
            fake_verdicts = self.discriminators(fake)
        finally:
            self.discriminators.requires_grad_(True)
        adversarial = generator_loss(self.config.loss, fake_verdicts)
        features = feature_matching(real_verdicts, fake_verdicts)
        loss = self.config.weight * adversarial + self.config.feature_weight * features
        return loss, {"gen_adv_loss": adversarial.item(), "feature_loss": features.item()}

    def step(self) -> None:
        self.optimizer.step()

    def discard(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
