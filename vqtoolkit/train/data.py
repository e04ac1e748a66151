"""Datasets and a resumable, seeded stream of batches."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from vqtoolkit.config import Recipe
from vqtoolkit.errors import VQTError
from vqtoolkit.modality import Modality


def make_dataset(recipe: Recipe, modality: Modality, split: str) -> Dataset:
    data = recipe.data
    path = data.eval_path if split == "test" and data.eval_path else data.path
    dataset = modality.dataset(path, split, data.channels, **data.options)
    if len(dataset) == 0:
        raise VQTError(f"data.path: no {split} examples in '{path or 'the shipped sample'}'")
    return dataset


class BatchStream:
    """Endless shuffled batches; epoch e uses a generator seeded with (seed, e), so step s is reproducible
    and a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, pin: bool = False):
        if len(dataset) < batch_size:
            raise VQTError(
                f"train.batch_size: {batch_size} is larger than the training set ({len(dataset)} examples)"
            )
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers, self.pin = num_workers, pin
        self.per_epoch = len(dataset) // batch_size

    def batches(self, start_step: int = 0):
        epoch, skip = divmod(start_step, self.per_epoch)
        while True:
            generator = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            order = torch.randperm(len(self.dataset), generator=generator)
            order = order[skip * self.batch_size : self.per_epoch * self.batch_size]
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=order.tolist(),
                num_workers=self.num_workers,
                pin_memory=self.pin,
                drop_last=True,
                persistent_workers=False,
                generator=generator,  # DataLoader seeds its workers from this, not from the global RNG
            )
            yield from loader
            epoch, skip = epoch + 1, 0


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    # Its own generator: iterating a loader without one draws from the global RNG, and a resumed run
    # would then see different random numbers (restarts, VAE noise) than an uninterrupted one.
    generator = torch.Generator().manual_seed(0)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, generator=generator
    )
