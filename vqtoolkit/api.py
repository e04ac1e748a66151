"""The Python API in a few calls. Everything here is importable from `vqtoolkit` itself.

The building blocks are plain `torch.nn` modules. A vector quantizer maps latents (B, D, *grid) to the
nearest of K code vectors; in training mode its forward pass also updates the codebook (k-means start,
EMA) and passes gradients straight through:

>>> import torch
>>> from vqtoolkit import VectorQuantizer
>>> _ = torch.manual_seed(0)
>>> vq = VectorQuantizer(dim=8, codebook_size=32)
>>> z = torch.randn(2, 8, 7, 7)                       # latents (B, D, H, W)
>>> out = vq(z)                                       # training step: loss, codes, quantized latents
>>> out.z.shape, out.codes.shape, out.loss.ndim
(torch.Size([2, 8, 7, 7]), torch.Size([2, 7, 7]), 0)
>>> codes = vq.eval().encode(z)                       # inference: integer codes
>>> nearest = torch.cdist(z.movedim(1, -1).reshape(-1, 8), vq.codebook).argmin(dim=1)
>>> torch.equal(codes.flatten(), nearest)             # each latent's nearest code vector
True
>>> vq.decode(codes).shape                            # codes -> code vectors
torch.Size([2, 8, 7, 7])

A Gaussian bottleneck gives a VAE: a mean and log-variance per position and the closed-form KL:

>>> from vqtoolkit import GaussianBottleneck
>>> vae = GaussianBottleneck(dim=8)
>>> out = vae(torch.randn(2, 8, 7, 7), sample=True)   # reparameterised sample
>>> out.z.shape, out.stats["kl_per_example"].shape, bool(out.loss > 0)
(torch.Size([2, 8, 7, 7]), torch.Size([2]), True)

A PixelCNN is a prior over code grids of rank 1 (speech), 2 (images) or 3 (video); `sample` draws
grids position by position:

>>> from vqtoolkit import PixelCNN, sample
>>> prior = PixelCNN(codebook_size=32, rank=2, hidden=16, layers=2)
>>> prior(torch.randint(0, 32, (2, 7, 7))).shape      # logits (B, K, H, W)
torch.Size([2, 32, 7, 7])
>>> drawn = sample(prior, (2, 7, 7), generator=torch.Generator().manual_seed(0))
>>> drawn.shape, drawn.dtype, 0 <= int(drawn.min()) <= int(drawn.max()) < 32
(torch.Size([2, 7, 7]), torch.int64, True)

A trained run directory (made by `vqt train` or `fit`) loads without pickle; in these examples
`image_run` and `speech_run` are small trained runs, such as `runs/image_vqvae` after
`vqt train recipes/image_vqvae.yaml`:

>>> from vqtoolkit import load_model
>>> model, recipe = load_model(image_run)
>>> recipe.data.modality, model.downsample, model.bottleneck.codebook_sizes()
('image', (4, 4), [32])
>>> images = torch.rand(3, 1, 28, 28)
>>> model.encode(images).shape                        # a 7x7 grid of codes per image
torch.Size([3, 7, 7])
>>> model.decode(model.encode(images)).shape
torch.Size([3, 1, 28, 28])
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vqtoolkit.inference.tokenizer import Tokenizer

RunOrTokenizer = str | Path | Tokenizer


def resolve_recipe(recipe: str | Path | None, overrides: list[str] = (), run_dir: str | Path | None = None):
    """The recipe a run trains with: the YAML file with dotted overrides, or to resume `run_dir`, that
    run's own resolved recipe with the overrides."""
    from vqtoolkit.config import load_recipe
    from vqtoolkit.errors import VQTError
    from vqtoolkit.rundir import CONFIG_FILE

    overrides = list(overrides)
    if run_dir is not None:
        if recipe:  # `vqt train --resume RUN key=value`: the first override came as the recipe argument
            overrides.insert(0, str(recipe))
        recipe = Path(run_dir) / CONFIG_FILE
        if not recipe.is_file():
            raise VQTError(f"{run_dir}: not a vqt run directory (no {CONFIG_FILE})")
    return load_recipe(recipe, overrides)


def trainer_for(recipe, run_dir: str | Path | None = None, overwrite: bool = False):
    """The Trainer of a resolved recipe (see `resolve_recipe`), resuming `run_dir` when given: what `fit`
    and `vqt train` both run."""
    from vqtoolkit.train.loop import Trainer

    return Trainer(recipe, run_dir=run_dir, resume=run_dir is not None, overwrite=overwrite)


def fit(
    recipe: str | Path,
    overrides: list[str] = (),
    run_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Train a recipe (a YAML file) with dotted overrides, as `vqt train` does; returns the run directory
    (`train.out_dir`, or `run_dir` to resume it). A recipe naming a `tokenizer` trains a prior. A
    `train.out_dir` that holds a run is refused unless `overwrite`.

    >>> from vqtoolkit import fit
    >>> tiny = ["model.encoder.hidden=8", "model.decoder.hidden=8", "model.latent_dim=4",
    ...         "bottleneck.codebook_size=16", "train.batch_size=8", "train.max_steps=2",
    ...         "train.picture_every=0", "train.eval_batches=1", f"train.out_dir={tmp}/fitted"]
    >>> run = fit("recipes/image_vqvae.yaml", tiny)
    >>> sorted(path.name for path in run.iterdir())
    ['config.yaml', 'metrics.jsonl', 'model.safetensors', 'recon_000002.png', 'state.safetensors']
    """
    resolved = resolve_recipe(None if run_dir else recipe, overrides, run_dir)
    trainer = trainer_for(resolved, run_dir, overwrite)
    trainer.fit()
    return trainer.run_dir


def evaluate(run_dir: str | Path, data: str | Path | None = None, batches: int = 0, device: str = "auto"):
    """The held-out metrics of a run, as `vqt eval` prints them: of its own held-out split, or of `data`;
    a prior run gives its NLL in bits per code and the bound in bits per dimension.

    >>> from vqtoolkit import evaluate
    >>> results = evaluate(image_run, batches=1)
    >>> sorted(key for key in results if "/" not in key)[:3]
    ['codebook_perplexity', 'codebook_used_fraction', 'examples']
    """
    return evaluate_run(run_dir, data, batches, device)[0]


def evaluate_run(run_dir, data=None, batches: int = 0, device: str = "auto"):
    """(results, model) of `evaluate`; the model is None for a prior run."""
    from vqtoolkit.plugins import registry
    from vqtoolkit.rundir import is_prior_run, load_model, resolve_device, resolve_model
    from vqtoolkit.train.data import eval_loader, make_dataset
    from vqtoolkit.train.evaluate import evaluate as evaluate_batches
    from vqtoolkit.train.evaluate import metric_functions
    from vqtoolkit.train.prior import evaluate_prior_run

    device = resolve_device(device, "--device")
    run_dir = resolve_model(run_dir)
    if is_prior_run(run_dir):
        return evaluate_prior_run(run_dir, str(data) if data else None, str(device)), None
    model, recipe = load_model(run_dir, device)
    if data:
        recipe.data.eval_path = str(data)
    modality = registry("modalities").get(recipe.data.modality)
    loader = eval_loader(make_dataset(recipe, modality, "test"), recipe.train.batch_size)
    metrics = metric_functions(modality, recipe)
    return evaluate_batches(model, loader, metrics, device, modality.value_range, batches), model


def tokenize(
    path: str | Path, model: RunOrTokenizer, output: str | Path | None = None, device: str = "auto"
) -> Tensor:
    """Codes of one media file: (*latent_grid), or (Q, *latent_grid) for residual VQ. `model` is a run
    directory or a loaded `Tokenizer`; with `output`, also writes the codes file `vqt decode` reads.

    >>> from vqtoolkit import tokenize
    >>> prompt = "plugins/vqt_speech/data/asterisk_small/dir-instr.g722"   # 105,304 samples at 16 kHz
    >>> codes = tokenize(prompt, model=speech_run, output=tmp / "dir-instr.codes")
    >>> codes.shape                                   # one code per 64 samples
    torch.Size([1646])
    >>> (tmp / "dir-instr.codes").is_file()           # for `vqt decode` or `decode`
    True
    """
    from vqtoolkit.inference.codes import write_codes

    tokenizer = _tokenizer(model, device)
    codes, meta = tokenizer.encode_file(Path(path))
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        write_codes(output, codes, meta)
    return codes


def tokenize_dataset(
    inputs: list[str | Path],
    model: str | Path,
    output: str | Path,
    device: str = "auto",
    codebooks: int = 0,
    shard_files: int = 256,
) -> dict | None:
    """Tokenize media files and folders of them into one code dataset at `output` (Arrow shards, an
    index and a manifest; see `vqtoolkit.data`), which `CodesDataset(output)` reads. Rerun after a kill,
    it resumes. Under torchrun each process tokenizes its share of the shards, one GPU each where there are
    GPUs. Returns the report (files tokenized, files skipped and why) on rank 0, None on the others."""
    from datetime import timedelta

    from vqtoolkit import parallel
    from vqtoolkit.inference.corpus import tokenize_corpus
    from vqtoolkit.rundir import resolve_device

    ranks, device_of_rank = parallel.setup(resolve_device(device, "--device"), timedelta(days=7))
    finished = False
    try:
        tokenizer = Tokenizer.load(model, str(device_of_rank), codebooks)
        files = tokenizer.media_files([str(path) for path in inputs])
        report = tokenize_corpus(tokenizer, files, Path(output), shard_files)
        finished = True
        return report
    finally:
        if ranks.active:
            parallel.shutdown(together=finished)


def decode(
    codes: Tensor | str | Path, model: RunOrTokenizer, output: str | Path | None = None, device: str = "auto"
) -> Tensor | Path:
    """Media from codes. `codes` is a codes file (decoded to its original size, as `vqt decode` does) or a
    tensor of codes (*latent_grid), or a batch of them (B, *latent_grid). Returns the media (C, *grid)
    (or (B, C, *grid)) in the modality's value range; with `output` (a codes file only), writes the media
    file instead and returns its path.

    >>> from vqtoolkit import decode, tokenize
    >>> prompt = "plugins/vqt_speech/data/asterisk_small/dir-instr.g722"
    >>> codes = tokenize(prompt, model=speech_run, output=tmp / "prompt.codes")
    >>> decode(tmp / "prompt.codes", model=speech_run).shape        # the original length
    torch.Size([1, 105304])
    >>> decode(codes, model=speech_run).shape                        # padded to whole codes
    torch.Size([1, 105344])
    >>> decode(tmp / "prompt.codes", model=speech_run, output=tmp / "prompt.wav").name
    'prompt.wav'
    """
    from vqtoolkit.inference.codes import read_codes
    from vqtoolkit.inference.stream import crop_to

    tokenizer = _tokenizer(model, device)
    low, high = tokenizer.modality.value_range
    if isinstance(codes, Tensor):
        if output is not None:
            raise ValueError("decode: `output` needs a codes file (it holds the media's size and rate)")
        levels = len(tokenizer.model.bottleneck.codebook_sizes()) > 1
        batched = codes.dim() > tokenizer.modality.rank + levels
        batch = (codes if batched else codes[None]).long().to(tokenizer.device)
        media = tokenizer.model.decode(batch).float().clamp(low, high).cpu()
        return media if batched else media[0]
    codes_path = Path(codes)
    if output is not None:
        tokenizer.decode_file(codes_path, Path(output))
        return Path(output)
    grid, meta = read_codes(codes_path)
    tokenizer.check(codes_path, meta)
    if tokenizer.modality.stream_writer:  # decoded in chunks, exactly as `vqt decode` writes it
        return torch.cat([piece.cpu() for piece in tokenizer.decode_pieces(grid, meta)], dim=1)
    media = tokenizer.model.decode(grid[None].to(tokenizer.device))[0].float().cpu()
    return crop_to(media, meta.original_shape).clamp(low, high)


def _tokenizer(model: RunOrTokenizer, device: str) -> Tokenizer:
    return model if isinstance(model, Tokenizer) else Tokenizer.load(model, device)
