"""Training and evaluating PixelCNN priors over the codes of a trained VQ-VAE run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vqtoolkit.config import Component, Recipe, instantiate
from vqtoolkit.data import CodesDataset
from vqtoolkit.errors import VQTError
from vqtoolkit.nn.pixelcnn_sampling import negative_log_likelihood
from vqtoolkit.progress import progress
from vqtoolkit.rundir import (
    TrainedRun,
    load_prior,
    load_run,
    read_safetensors,
    save_tensors,
)
from vqtoolkit.train.data import make_dataset


def tokenizer_recipe(recipe: Recipe, tokenizer: TrainedRun) -> Recipe:
    """The VQ-VAE run's own recipe, with the data paths the prior recipe sets (if any)."""
    vq_recipe = tokenizer.recipe
    for key in ("path", "eval_path"):
        if getattr(recipe.data, key):
            setattr(vq_recipe.data, key, getattr(recipe.data, key))
    return vq_recipe


@torch.no_grad()
def extract_codes(tokenizer: TrainedRun, vq_recipe: Recipe, split: str, cache: Path) -> torch.Tensor:
    """Codes (N, *latent_grid) of every example of a split, cached in the prior's run directory and
    recomputed when the VQ-VAE or the data changes."""
    key = {"model_hash": tokenizer.model_hash, "data": vq_recipe.data.path, "eval": vq_recipe.data.eval_path}
    if cache.is_file():
        try:
            tensors, meta = read_safetensors(cache)
            if json.loads(meta.get("key", "{}")) == key and "codes" in tensors:
                return tensors["codes"].long()
        except (VQTError, ValueError):
            pass  # a cache that cannot be read is made again, never unpickled
    dataset = make_dataset(vq_recipe, tokenizer.modality, split)
    loader = DataLoader(dataset, batch_size=vq_recipe.train.batch_size)
    model, codes = tokenizer.model, []
    for batch in progress(loader, desc=f"tokenizing {split}", unit="batch", leave=False):
        codes.append(model.encode(batch.to(tokenizer.device)).cpu())
    codes = torch.cat(codes)
    save_tensors(cache, {"codes": codes.to(torch.int32)}, {"key": json.dumps(key)})
    return codes


def code_dataset(recipe: Recipe, tokenizer: TrainedRun) -> CodesDataset:
    """`data.codes` in windows of `data.codes_window` steps, checked against the tokenizer."""
    where = recipe.data.codes
    dataset = CodesDataset(where, window=recipe.data.codes_window)
    if dataset.manifest.get("model_hash") != tokenizer.model_hash:
        raise VQTError(
            f"data.codes: {where} holds the codes of another model than tokenizer {recipe.tokenizer}"
        )
    if dataset.codebook_sizes != tokenizer.model.bottleneck.codebook_sizes():
        raise VQTError(
            f"data.codes: {where} holds codes of {len(dataset.codebook_sizes)} codebooks; priors model one"
        )
    if not len(dataset):
        raise VQTError(f"data.codes: {where} has no item of {recipe.data.codes_window} steps")
    if (
        not recipe.data.codes_window
        and len({tuple(dataset.info(i)["shape"]) for i in range(dataset.items)}) > 1
    ):
        raise VQTError(f"data.codes: the items of {where} differ in size; set data.codes_window=N")
    return dataset


def codes_in_use(codes: torch.Tensor | CodesDataset) -> int:
    """How many distinct codes a training set holds."""
    if isinstance(codes, CodesDataset):
        return codes.distinct_codes()
    return codes.unique().numel()


class PriorObjective:
    """Cross-entropy of a prior over the codes a tokenizer run gives its training data; evaluated on the
    codes of its held-out split."""

    name = "train prior"

    def __init__(self, recipe: Recipe, device: torch.device, ranks, run_dir: Path):
        self.tokenizer = load_run(recipe.tokenizer, device, "tokenizer")
        sizes = self.tokenizer.model.bottleneck.codebook_sizes()
        if len(sizes) != 1:
            raise VQTError(
                f"tokenizer: {recipe.tokenizer} has {len(sizes)} codebooks; priors model one (use vq)"
            )
        run_dir.mkdir(parents=True, exist_ok=True)  # only once the tokenizer is known to be usable
        self.vq_recipe = tokenizer_recipe(recipe, self.tokenizer)
        self.train_set = (
            code_dataset(recipe, self.tokenizer)
            if recipe.data.codes
            else extract_codes(self.tokenizer, self.vq_recipe, "train", run_dir / "codes_train.safetensors")
        )
        self.eval_set = extract_codes(
            self.tokenizer, self.vq_recipe, "test", run_dir / "codes_test.safetensors"
        )
        used = codes_in_use(self.train_set) / sizes[0]
        if used < 0.5 and ranks.main:
            print(
                f"warning: tokenizer: {recipe.tokenizer} uses {used:.0%} of its {sizes[0]} codes on the "
                "training data; a prior over so few codes reports flattering bits per code",
                file=sys.stderr,
            )
        component = recipe.prior or Component()
        rank = self.tokenizer.modality.rank
        self.model = instantiate("priors", component, "prior", "pixelcnn", sizes[0], rank).to(device)

    def model_meta(self) -> dict[str, str]:
        grid = list(self.train_set[0].shape)
        return {"tokenizer_hash": self.tokenizer.model_hash, "grid": json.dumps(grid)}

    def optimizers(self) -> dict:
        return {}

    def trained_beside(self) -> dict:
        return {}

    def forward_state(self) -> list[torch.Tensor]:
        return []

    def loss(self, forward, codes: torch.Tensor, step: int) -> tuple[torch.Tensor, dict, dict]:
        loss = F.cross_entropy(forward(codes).float(), codes)
        return loss, {"bits_per_code": loss.detach() / math.log(2)}, {}

    def commit(self, step: int, applied: bool) -> None:
        pass

    def postfix(self, stats: dict, warning: str) -> dict:
        return {"bits/code": f"{stats['bits_per_code']:.3f}"}

    def collapse_warning(self, stats: dict, step: int) -> str:
        return ""

    def evaluate(self, device: torch.device, autocast) -> dict:
        return evaluate_prior(self.model, self.tokenizer, self.vq_recipe, self.eval_set)


@torch.no_grad()
def evaluate_prior(
    prior, tokenizer: TrainedRun, vq_recipe: Recipe, codes: torch.Tensor, batch: int = 64
) -> dict:
    """The prior's NLL in bits per code and, as in the VQ-VAE paper, a bound in bits per data dimension:
    (prior NLL of the codes + reconstruction NLL) / dims. The reconstruction term is the decoder's
    Gaussian likelihood with the variance fitted to the held-out squared error, discretised to the
    media's sample bins (8-bit pixels; 16-bit audio)."""
    prior.eval()
    modality, model = tokenizer.modality, tokenizer.model
    dataset = make_dataset(vq_recipe, modality, "test")
    prior_nll, squared, dims = [], [], None
    for start in range(0, len(codes), batch):
        chunk = codes[start : start + batch].to(tokenizer.device)
        prior_nll.append(negative_log_likelihood(prior, chunk).cpu())
        media = torch.stack([dataset[i] for i in range(start, start + len(chunk))]).to(tokenizer.device)
        recon = model.decode(chunk).float()
        squared.append((recon - media).pow(2).flatten(1).sum(1).cpu())
        dims = media[0].numel()
    prior_nll, squared = torch.cat(prior_nll).double(), torch.cat(squared).double()
    variance = squared.sum() / (len(squared) * dims)
    low, high = modality.value_range
    bin_width = (high - low) / 2**modality.sample_bits
    recon_nll = (
        0.5 * dims * math.log(2 * math.pi * variance) + squared / (2 * variance) - dims * math.log(bin_width)
    )
    codes_per_example = math.prod(codes.shape[1:])
    return {
        "bits_per_code": (prior_nll.mean() / (codes_per_example * math.log(2))).item(),
        "prior_bits_per_dim": (prior_nll.mean() / (dims * math.log(2))).item(),
        "recon_bits_per_dim": (recon_nll.mean() / (dims * math.log(2))).item(),
        "bits_per_dim": ((prior_nll + recon_nll).mean() / (dims * math.log(2))).item(),
        "examples": len(codes),
    }


def evaluate_prior_run(run_dir: str | Path, data_path: str | None = None, device: str = "cpu") -> dict:
    """`vqt eval` of a prior run: codes of the held-out split (or of `data_path`) through the prior."""
    prior, recipe, _, tokenizer_hash = load_prior(run_dir, device)
    tokenizer = load_run(recipe.tokenizer, device, "--device")
    if tokenizer_hash != tokenizer.model_hash:
        raise VQTError(f"{run_dir}: its tokenizer {recipe.tokenizer} has changed since the prior was trained")
    if data_path:
        recipe.data.eval_path = data_path
    vq_recipe = tokenizer_recipe(recipe, tokenizer)
    cache = Path(run_dir) / ("codes_test.safetensors" if not data_path else "codes_eval.safetensors")
    codes = extract_codes(tokenizer, vq_recipe, "test", cache)
    return evaluate_prior(prior, tokenizer, vq_recipe, codes)
