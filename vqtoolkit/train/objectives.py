"""What one training step optimises. The Trainer (vqtoolkit.train.loop) owns everything every objective
shares: the optimizer and its schedule, gradient clipping, NaN skipping, bf16 autocast, DDP, signals,
checkpoints and the progress bar. An objective owns its model, its data and its loss:

- `AutoencoderObjective`: reconstruction + bottleneck loss; with a recipe's `adversarial:` section also
  discriminators (their own optimizer, schedule and clipping) and the generator's adversarial and
  feature-matching terms from `adversarial.start_step` on.
- `PriorObjective` (vqtoolkit.train.prior): cross-entropy of a prior over a tokenizer's codes.
"""

from __future__ import annotations

import json

import torch

from vqtoolkit.config import Recipe
from vqtoolkit.model import Autoencoder, build_model
from vqtoolkit.nn.base import Bottleneck
from vqtoolkit.plugins import registry
from vqtoolkit.train.adversary import Adversary
from vqtoolkit.train.data import eval_loader, make_dataset
from vqtoolkit.train.evaluate import evaluate, metric_functions


class AutoencoderObjective:
    name = "train"

    def __init__(self, recipe: Recipe, device: torch.device, ranks, model: Autoencoder | None = None):
        self.recipe = recipe
        self.low_usage_steps = 0  # training steps in a row whose batch used too few codes
        self.modality = registry("modalities").get(recipe.data.modality, "data.modality")
        self.metrics = metric_functions(self.modality, recipe)
        self.train_set = make_dataset(recipe, self.modality, "train")
        self.eval_set = make_dataset(recipe, self.modality, "test") if ranks.main else None
        self.model: Autoencoder = (model or build_model(recipe)).to(device)
        self.fitted: dict[str, float] = {}  # bottleneck settings changed for the run's length
        if recipe.optim.schedule == "cosine":  # a run whose length is part of its definition
            for module in self.model.modules():
                if isinstance(module, Bottleneck):
                    self.fitted |= module.fit_to_run(recipe.train.max_steps)
        if recipe.train.channels_last and self.modality.rank in (2, 3):
            fmt = torch.channels_last if self.modality.rank == 2 else torch.channels_last_3d
            self.model = self.model.to(memory_format=fmt)
        media = (recipe.data.channels, self.modality.rank)
        self.adversary = (
            Adversary(recipe.adversarial, media, device, ranks, recipe.train.max_steps)
            if recipe.adversarial is not None
            else None
        )

    # --- what the trainer saves ------------------------------------------------------------------------

    def model_meta(self) -> dict[str, str]:
        fitted = {"fitted_to_run": json.dumps(self.fitted)} if self.fitted else {}
        return {"modality": self.modality.name, **fitted}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers the objective steps itself, beside the trainer's own (a discriminator's)."""
        return {"discriminator": self.adversary.optimizer} if self.adversary else {}

    def trained_beside(self) -> dict[str, torch.nn.Module]:
        """Modules trained with the model but not part of it: kept in the state file, not the weights."""
        return {"discriminator": self.adversary.discriminators} if self.adversary else {}

    def forward_state(self) -> list[torch.Tensor]:
        # What the forward pass itself changes in training: the EMA codebook, its counts and dead-code
        # restarts (which rewrite even a codebook learnt by gradient), batch-norm statistics, and the
        # discriminators' spectral-norm power iterations. All small.
        judges = list(self.adversary.discriminators.buffers()) if self.adversary else []
        return [*self.model.buffers(), *self.model.bottleneck.parameters(), *judges]

    # --- one step --------------------------------------------------------------------------------------

    def loss(self, forward, batch: torch.Tensor, step: int) -> tuple[torch.Tensor, dict, dict]:
        """(the model's loss, stats to log, losses that must be finite for the step to count). With the
        adversarial terms on, the discriminators' gradient is computed here and applied by `commit`."""
        out = forward(batch)
        loss, checked = out.loss, {}
        if self.adversary is not None and self.adversary.active(step):
            fake = self.model.media(out.output)
            checked, real_verdicts = self.adversary.discriminator_backward(batch, fake, step)
            generator_terms, generator_stats = self.adversary.generator_terms(fake, real_verdicts)
            loss, checked = loss + generator_terms, {**checked, **generator_stats}
        stats = {k: v for k, v in out.bottleneck.stats.items() if v.numel() == 1}
        return loss, {"recon": out.recon_per_example.mean(), **stats}, checked

    def commit(self, step: int, applied: bool) -> None:
        """After the trainer applied (or, for a non-finite step, discarded) the model's gradient."""
        if self.adversary is None or not self.adversary.active(step):
            return
        self.adversary.step() if applied else self.adversary.discard()

    def postfix(self, stats: dict, warning: str) -> dict:
        postfix = {"loss": f"{stats['loss']:.4f}"}
        if "usage" in stats:
            postfix["usage"] = f"{stats['usage']:.2f}" + "!" * bool(warning)
        return postfix

    def collapse_warning(self, stats: dict, step: int) -> str:
        """A warning when the batches have used too few codes for a while (5% of the run, at least 10
        steps in a row), once the first 10% of training is past: lasting collapse, not the warm-up."""
        cfg = self.recipe.train
        low = "usage" in stats and float(stats["usage"]) < cfg.collapse_warning
        self.low_usage_steps = self.low_usage_steps + 1 if low else 0
        lasting = self.low_usage_steps >= max(10, cfg.max_steps // 20)
        if not lasting or step <= cfg.max_steps / 10:
            return ""
        return (
            f"codebook collapse: {stats['usage']:.1%} of codes used at step {step}, under "
            f"{cfg.collapse_warning:.0%} for the last {self.low_usage_steps} steps"
        )

    # --- pictures and held-out metrics (rank 0) ----------------------------------------------------------

    def fixed_batch(self) -> torch.Tensor:
        return next(iter(eval_loader(self.eval_set, min(8, len(self.eval_set)))))

    def picture(self, batch: torch.Tensor, path, autocast) -> None:
        if self.modality.picture is None:
            return
        self.model.eval()
        with torch.no_grad(), autocast:
            recon = self.model.reconstruct(batch).float()
        self.modality.picture(batch.cpu(), recon.clamp(*self.modality.value_range).cpu(), path)

    def evaluate(self, device: torch.device, autocast) -> dict:
        cfg = self.recipe.train
        loader = eval_loader(self.eval_set, cfg.batch_size, self.recipe.data.num_workers)
        with autocast:
            return evaluate(
                self.model, loader, self.metrics, device, self.modality.value_range, cfg.eval_batches
            )
