"""The modality-agnostic trainer: one recipe in, one run directory out."""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from vqtoolkit.config import Recipe, dump_recipe
from vqtoolkit.errors import VQTError
from vqtoolkit.model import Autoencoder, check_model_size
from vqtoolkit.progress import progress
from vqtoolkit.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    atomic_write,
    load_checkpoint,
    load_state,
    load_weights,
    resolve_device,
    save_checkpoint,
    save_tensors,
)
from vqtoolkit.threads import apply_threads
from vqtoolkit.train import distributed
from vqtoolkit.train.adversary import clip_norm, scheduled_lr
from vqtoolkit.train.data import BatchStream
from vqtoolkit.train.objectives import AutoencoderObjective
from vqtoolkit.train.signals import StopOnSignals

SNAPSHOT_DIR = "snapshots"
DATA_WAIT_WARNING = 0.2  # warn when more of the step time than this went to waiting for the next batch
DATA_WAIT_MIN_STEPS = 50  # ... in a run of at least this many steps


def refuse_existing_run(folder: Path) -> None:
    """A new run never writes over another, nor into a folder of other files: one line if `folder` holds
    a run's files or anything else."""
    if any((folder / name).exists() for name in (CONFIG_FILE, MODEL_FILE, STATE_FILE, METRICS_FILE)):
        raise VQTError(
            f"{folder}: holds a run already; continue it with `vqt train --resume {folder}`, start it "
            "again with --overwrite, or choose another train.out_dir"
        )
    if folder.exists() and not folder.is_dir():
        raise VQTError(f"{folder}: is a file; train.out_dir must be a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise VQTError(
            f"{folder}: holds other files; choose a new or empty train.out_dir (or train into it anyway "
            "with --overwrite)"
        )


def learning_rate(recipe: Recipe, step: int) -> float:
    return scheduled_lr(recipe.optim, step, recipe.train.max_steps)


class Trainer:
    """One training loop for every objective (see vqtoolkit.train.objectives): an autoencoder, an
    autoencoder with discriminators, or a prior over a tokenizer's codes (a recipe naming a tokenizer)."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path | None = None,
        resume: bool = False,
        model: Autoencoder | None = None,
        overwrite: bool = False,
    ):
        """`model` replaces the autoencoder the recipe builds (benchmarks swap in a peer's quantizer).
        A new run refuses a run directory that holds a run already, unless `overwrite`.

        Under torchrun (WORLD_SIZE > 1) this is one rank of data-parallel training (see
        vqtoolkit.train.distributed): only rank 0 writes files, shows progress and evaluates.
        """
        self.recipe, cfg = recipe, recipe.train
        self.run_dir = Path(run_dir or cfg.out_dir)
        if not resume and not overwrite:
            refuse_existing_run(self.run_dir)
        self.ranks, self.device = distributed.setup(resolve_device(cfg.device))
        if cfg.batch_size % self.ranks.world_size:
            raise VQTError(
                f"train.batch_size: {cfg.batch_size} does not split evenly over {self.ranks.world_size} "
                "processes (it is the global batch, shared out among them)"
            )
        if cfg.threads:  # else the caller's (`vqt` chose the free cores, or OMP_NUM_THREADS)
            apply_threads(cfg.threads)  # `vqt --threads` still comes first
        torch.manual_seed(cfg.seed)  # the same on every rank: the same initial weights and random draws
        if recipe.tokenizer:
            from vqtoolkit.train.prior import PriorObjective

            self.objective = PriorObjective(recipe, self.device, self.ranks, self.run_dir)
        else:
            if model is None:
                check_model_size(recipe)  # refuse a model too big for this machine before allocating it
            self.objective = AutoencoderObjective(recipe, self.device, self.ranks, model)
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=recipe.optim.lr,
            betas=recipe.optim.betas,
            weight_decay=recipe.optim.weight_decay,
            fused=cuda or None,
        )
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if cuda and cfg.precision == "bf16"
            else nullcontext()
        )
        self.forward = self.model
        if self.ranks.active:
            self.forward = distributed.data_parallel(self.model, self.device)
        self.forward = torch.compile(self.forward) if cfg.compile else self.forward
        self.step = self.skipped_steps = 0
        self.seconds_before = 0.0  # wall time of the earlier sessions of a resumed run
        self.started = time.perf_counter()
        self.data_wait_fraction = 0.0  # of this run's step time, spent waiting for batches (set by fit)
        if resume:
            self._resume()
        elif self.ranks.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run_dir / CONFIG_FILE, lambda tmp: Path(tmp).write_text(dump_recipe(recipe)))
            (self.run_dir / METRICS_FILE).unlink(missing_ok=True)

    # the objective's model and data, under the names benchmarks and tests use
    model = property(lambda self: self.objective.model)
    train_set = property(lambda self: self.objective.train_set, lambda self, v: self._set("train_set", v))
    eval_set = property(lambda self: self.objective.eval_set, lambda self, v: self._set("eval_set", v))

    def _set(self, name: str, value) -> None:
        setattr(self.objective, name, value)

    def _resume(self) -> None:
        optimizers, modules = self._optimizers(), self.objective.trained_beside()
        if not self.ranks.main:  # read only: rank 0 tidies the run directory
            load_weights(self.model, self.run_dir / MODEL_FILE, self.run_dir / CONFIG_FILE)
            state = load_state(self.run_dir / STATE_FILE, optimizers, modules)
            self.step, self.skipped_steps = state["step"], state.get("skipped_steps", 0)
            self.seconds_before = state.get("train_seconds", 0.0)
            return
        state = load_checkpoint(self.run_dir, self.model, optimizers, modules)
        self.step, self.skipped_steps = state["step"], state.get("skipped_steps", 0)
        self.seconds_before = state.get("train_seconds", 0.0)
        atomic_write(self.run_dir / CONFIG_FILE, lambda tmp: Path(tmp).write_text(dump_recipe(self.recipe)))

    def log(self, record: dict) -> None:
        if not self.ranks.main:
            return
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"": self.optimizer, **self.objective.optimizers()}

    def checkpoint(self) -> None:
        if not self.ranks.main:
            return
        save_checkpoint(
            self.run_dir,
            self.model.state_dict(),
            self.objective.model_meta(),
            self._optimizers(),
            self.step,
            {"skipped_steps": self.skipped_steps, "train_seconds": self.train_seconds()},
            self.objective.trained_beside(),
        )

    def snapshot(self) -> None:
        """A copy of the weights now, beside the checkpoint, that later checkpoints leave alone."""
        folder = self.run_dir / SNAPSHOT_DIR
        folder.mkdir(exist_ok=True)
        meta = {**self.objective.model_meta(), "step": str(self.step)}
        meta["train_seconds"] = f"{self.train_seconds():.1f}"
        save_tensors(folder / f"model_{self.step:07d}.safetensors", self.model.state_dict(), meta)

    def train_seconds(self) -> float:
        """Wall time of this run so far, over every session of it (a resumed run counts its earlier ones)."""
        return self.seconds_before + time.perf_counter() - self.started

    def train_step(self, batch: torch.Tensor) -> dict:
        """One optimisation step. A step whose loss or gradient is not finite changes nothing and returns
        only {"loss", "grad_norm", "skipped": True}."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.recipe, self.step)
        # The codebook is updated inside the forward pass, before the loss shows a NaN batch: keep a copy
        # to put back rather than let NaN latents into its moving averages for good.
        saved = [tensor.detach().clone() for tensor in self.objective.forward_state()]
        with self.autocast:
            loss, stats, checked = self.objective.loss(self.forward, batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_norm(self.model.parameters(), self.recipe.optim.grad_clip)
        loss_value, norm = loss.item(), grad_norm.item()
        finite = all(math.isfinite(v) for v in (loss_value, norm, *checked.values()))
        # every rank must skip the same steps, or their weights and codebooks would part ways
        if not distributed.all_true(finite, self.device):
            self.optimizer.zero_grad(set_to_none=True)
            self.objective.commit(self.step, applied=False)
            with torch.no_grad():
                for tensor, copy in zip(self.objective.forward_state(), saved):
                    tensor.copy_(copy)
            return {"loss": loss_value, "grad_norm": norm, "skipped": True}
        self.optimizer.step()
        self.objective.commit(self.step, applied=True)
        numbers = {k: v.item() if torch.is_tensor(v) else v for k, v in stats.items()}
        return {"loss": loss_value, "grad_norm": norm, **checked, **numbers}

    def picture(self, batch) -> None:
        if self.ranks.main and hasattr(self.objective, "picture"):
            path = self.run_dir / f"recon_{self.step:06d}.png"
            self.objective.picture(batch.to(self.device), path, self.autocast)

    def evaluate(self) -> dict:
        """Metrics on the held-out split; computed by rank 0 alone ({} on the other ranks)."""
        if not self.ranks.main:
            return {}
        results = self.objective.evaluate(self.device, self.autocast)
        self.log({"step": self.step, "split": "eval", **results})
        return results

    def fit(self) -> dict:
        cfg, ranks, objective = self.recipe.train, self.ranks, self.objective
        pin = self.device.type == "cuda"
        stream = BatchStream(
            self.train_set,
            cfg.batch_size,
            cfg.seed,
            self.recipe.data.num_workers,
            pin,
            ranks.rank,
            ranks.world_size,
        )
        batches = stream.batches(self.step)
        fixed = objective.fixed_batch() if ranks.main and hasattr(objective, "fixed_batch") else None
        bad_steps: list[int] = []  # the current run of skipped steps
        warned = False
        waited = busy = 0.0  # since the last train record
        total_waited = total_busy = 0.0
        first_step = self.step
        bar = progress(
            total=cfg.max_steps, initial=self.step, desc=objective.name, unit="step", disable=not ranks.main
        )
        agree = (lambda signum: distributed.largest(signum, self.device)) if ranks.active else None
        with StopOnSignals(agree, ranks.world_size) as signals, bar:
            while self.step < cfg.max_steps:
                start = time.perf_counter()
                batch = next(batches).to(self.device, non_blocking=pin)
                loaded = time.perf_counter()
                stats = self.train_step(batch)
                done = time.perf_counter()
                waited, busy = waited + loaded - start, busy + done - start
                total_waited, total_busy = total_waited + loaded - start, total_busy + done - start
                self.step += 1
                bar.update(1)
                if stats.get("skipped"):
                    self.skipped_steps += 1
                    bad_steps.append(self.step)
                    if len(bad_steps) > cfg.max_bad_steps:
                        raise VQTError(diverged(stats, bad_steps, cfg.max_bad_steps))
                else:
                    bad_steps = []
                    warning = objective.collapse_warning(stats, self.step)
                    postfix = objective.postfix(stats, warning)
                    postfix["data_wait"] = f"{total_waited / max(total_busy, 1e-9):.0%}"
                    bar.set_postfix(postfix, refresh=False)  # update() redraws at most every `interval` s
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        numbers = {"data_wait_fraction": waited / max(busy, 1e-9), **stats}
                        self.log(
                            {
                                "step": self.step,
                                "split": "train",
                                "lr": learning_rate(self.recipe, self.step - 1),
                                "skipped_steps": self.skipped_steps,
                                **distributed.mean_over_ranks(numbers, self.device),  # alone: as they are
                                **({"warning": warning} if warning else {}),
                            }
                        )
                        if warning and not warned and ranks.main:  # once per collapse, not at every log step
                            tqdm.write(f"warning: {warning}", file=sys.stderr)
                        warned = bool(warning)
                        waited = busy = 0.0
                if cfg.picture_every and self.step % cfg.picture_every == 0 and fixed is not None:
                    self.picture(fixed)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.checkpoint()
                if cfg.snapshot_every and self.step % cfg.snapshot_every == 0 and ranks.main:
                    self.snapshot()
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                    self.evaluate()
                signals.check(self.step, self.run_dir, self._checkpoint_and_wait)
            if fixed is not None:
                self.picture(fixed)
            self.checkpoint()
            signals.check(self.step, self.run_dir, save_checkpoint=lambda: None)  # a signal while saving
        self.data_wait_fraction = total_waited / max(total_busy, 1e-9)
        # (a short run mostly measures the workers starting up)
        long_enough = self.step - first_step >= DATA_WAIT_MIN_STEPS
        if self.data_wait_fraction > DATA_WAIT_WARNING and long_enough and ranks.main:
            tqdm.write(
                f"warning: {self.data_wait_fraction:.0%} of the step time went to waiting for data; "
                f"raise data.num_workers (now {self.recipe.data.num_workers})",
                file=sys.stderr,
            )
        results = {**self.evaluate(), "skipped_steps": self.skipped_steps}
        results["train_seconds"] = self.train_seconds()
        results["threads"] = torch.get_num_threads()
        distributed.barrier()  # the ranks leave together: one tearing down gloo early can abort another
        return results

    def _checkpoint_and_wait(self) -> None:
        """Rank 0 saves while the others wait: none of them may exit (and so have the launcher stop the
        rest) before the checkpoint is on disk."""
        self.checkpoint()
        distributed.barrier()


def diverged(stats: dict, bad_steps: list[int], max_bad_steps: int) -> str:
    what = (
        f"loss was {stats['loss']}"
        if not math.isfinite(stats["loss"])
        else f"gradient norm was {stats['grad_norm']}"
    )
    steps = f"steps {bad_steps[0]}-{bad_steps[-1]}" if len(bad_steps) > 1 else f"step {bad_steps[0]}"
    return (
        f"training diverged: {what} at {steps} ({len(bad_steps)} in a row, train.max_bad_steps is "
        f"{max_bad_steps}); lower optim.lr or check the data"
    )
