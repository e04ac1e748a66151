"""Datasets and a resumable, seeded stream of batches."""

from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vqtoolkit.config import Recipe
from vqtoolkit.errors import VQTError
from vqtoolkit.modality import Modality
from vqtoolkit.train.signals import STOP_SIGNALS


def make_dataset(recipe: Recipe, modality: Modality, split: str) -> Dataset:
    data = recipe.data
    path = data.eval_path if split == "test" and data.eval_path else data.path
    dataset = modality.dataset(path, split, data.channels, **data.options)
    if len(dataset) == 0:
        raise VQTError(f"data.path: no {split} examples in '{path or 'the shipped sample'}'")
    return dataset


class BatchStream:
    """Endless shuffled batches; epoch e uses a generator seeded with (seed, e), so step s is reproducible
    and a resumed run sees exactly the batches an uninterrupted one would.

    With `world_size` processes, `batch_size` is the global batch: every rank draws the same order and
    takes slice `rank` of each global batch, so together the ranks see what one process would.
    One DataLoader serves all epochs, so its worker processes start once, not at every epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        pin: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(dataset) < batch_size:
            raise VQTError(
                f"train.batch_size: {batch_size} is larger than the training set ({len(dataset)} examples)"
            )
        if batch_size % world_size:
            raise VQTError(
                f"train.batch_size: {batch_size} does not split evenly over {world_size} processes"
            )
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers, self.pin = num_workers, pin
        self.rank, self.world_size = rank, world_size
        self.per_epoch = len(dataset) // batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """(batches, global batch size) example indices of an epoch."""
        generator = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        return order[: self.per_epoch * self.batch_size].view(self.per_epoch, self.batch_size)

    def _indices(self, start_step: int):
        """This rank's example indices from `start_step` on, epoch after epoch."""
        epoch, skip = divmod(start_step, self.per_epoch)
        share = self.batch_size // self.world_size
        while True:
            yield from (
                self.order(epoch)[skip:, self.rank * share : (self.rank + 1) * share].flatten().tolist()
            )
            epoch, skip = epoch + 1, 0

    def batches(self, start_step: int = 0):
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size // self.world_size,
            sampler=_Endless(self._indices(start_step)),
            num_workers=self.num_workers,
            pin_memory=self.pin,
            worker_init_fn=_ignore_stop_signals,
            # DataLoader seeds its workers from this, not from the global RNG
            generator=torch.Generator().manual_seed(self.seed * 100003 + start_step),
        )
        return iter(loader)


def _ignore_stop_signals(worker_id: int) -> None:
    """In a worker process: Ctrl-C reaches the whole process group (torchrun signals it too), but the
    trainer stops on its own terms (see signals.py) and then ends its workers; a worker that died at
    once would make its next batch fail first."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class _Endless(Sampler):
    """A sampler over an endless iterator of indices (it has no length; the DataLoader never ends)."""

    def __init__(self, indices):
        self.indices = indices

    def __iter__(self):
        return self.indices


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    # Its own generator: iterating a loader without one draws from the global RNG, and a resumed run
    # would then see different random numbers (restarts, VAE noise) than an uninterrupted one.
    generator = torch.Generator().manual_seed(0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=_ignore_stop_signals,
        generator=generator,
    )
