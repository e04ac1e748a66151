"""Media files -> codes files -> media files, with a trained run directory as the model."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from vqtoolkit.config import Recipe
from vqtoolkit.errors import VQTError
from vqtoolkit.files import refuse_input_as_output
from vqtoolkit.inference.codes import CodesMeta, read_codes_with_audio, write_codes
from vqtoolkit.inference.stream import (
    crop_to,
    decode_stream,
    encode_stream,
    pad_to_multiple,
    receptive_radius,
)
from vqtoolkit.media import media_files
from vqtoolkit.modality import Modality
from vqtoolkit.model import Autoencoder
from vqtoolkit.plugins import registry
from vqtoolkit.rundir import load_run


@dataclass
class Tokenizer:
    run_dir: Path
    model: Autoencoder
    recipe: Recipe
    modality: Modality
    model_hash: str
    device: torch.device
    codebooks: int = 0  # residual models: keep only the codes of the first this many stages; 0 = all

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", codebooks: int = 0) -> Tokenizer:
        run = load_run(run_dir, device)
        tokenizer = cls(run.run_dir, run.model, run.recipe, run.modality, run.model_hash, run.device)
        if codebooks:
            tokenizer.keep_codebooks(codebooks)
        return tokenizer

    def keep_codebooks(self, count: int) -> None:
        """Write only the codes of the first `count` stages of a residual model (a lower bitrate)."""
        stages = len(self.model.bottleneck.codebook_sizes())
        if not getattr(self.model.bottleneck, "residual", False) and count != stages:
            raise VQTError(
                f"--codebooks {count}: {self.run_dir} is not a residual model; its codes are whole"
            )
        if not 1 <= count <= stages:
            raise VQTError(f"--codebooks {count}: {self.run_dir} has {stages} codebooks")
        self.codebooks = count

    def codebook_sizes(self) -> list[int]:
        """The codebook sizes of the codes this tokenizer writes."""
        sizes = self.model.bottleneck.codebook_sizes()
        return sizes[: self.codebooks or len(sizes)]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The model's decode, for codes of one level too (no level axis) when the model is residual."""
        if getattr(self.model.bottleneck, "residual", False) and codes.dim() == self.modality.rank + 1:
            codes = codes.unsqueeze(1)
        return self.model.decode(codes)

    def media_files(self, paths: list[str]) -> list[Path]:
        """Expand folders into the files this model's modality reads, sorted."""
        files, seen = [], set()
        for path in map(Path, paths):
            found = (
                media_files(path, self.modality.extensions, self.modality.name) if path.is_dir() else [path]
            )
            for file in found:  # a file named twice (or inside a folder also named) is tokenized once
                if os.path.abspath(file) not in seen:
                    seen.add(os.path.abspath(file))
                    files.append(file)
        return files

    def options(self, fn) -> dict:
        """The recipe's data options (and channels) that a reader or writer of the modality accepts,
        with that function's own defaults for the rest, e.g. {"sample_rate": 16000}."""
        params = inspect.signature(fn).parameters
        given = {"channels": self.recipe.data.channels, **self.recipe.data.options}
        defaults = {k: p.default for k, p in params.items() if p.default is not p.empty}
        return {k: given.get(k, v) for k, v in defaults.items() if k != "chunk"}

    @cached_property
    def context(self) -> tuple[int, int]:
        """Neighbours each chunk needs: (input steps, codes), the encoder and decoder receptive fields."""
        ds = self.model.downsample
        spatial = [2 * f for f in ds[1:]]
        channels, latent = self.recipe.data.channels, self.recipe.model.latent_dim
        encoder = receptive_radius(self.model.encoder, [channels, 64 * ds[0], *spatial], 1 / ds[0])
        decoder = receptive_radius(self.model.decoder, [latent, 64, *spatial], ds[0])
        return encoder, decoder

    @torch.no_grad()
    def encode_file(self, path: Path, chunk: int = 0) -> tuple[torch.Tensor, CodesMeta]:
        """Codes of one media file; modalities with a stream reader are encoded `chunk` steps at a time
        (default: the stream reader's own chunk)."""
        if path.suffix.lower() not in self.modality.extensions:
            raise VQTError(
                f"{path}: the {self.modality.name} model in {self.run_dir} cannot read this file "
                f"(it reads {', '.join(self.modality.extensions)})"
            )
        ds = self.model.downsample
        if self.modality.stream:
            options = self.options(self.modality.stream)
            chunk = chunk or inspect.signature(self.modality.stream).parameters["chunk"].default
            pieces = self.modality.stream(path, chunk=chunk, **options)

            def encode(batch: torch.Tensor) -> torch.Tensor:  # the stream pads time; pad the other axes
                return self.model.encode(pad_to_multiple(batch, (1, *ds[1:])))

            codes, grid = encode_stream(encode, pieces, ds[0], chunk, self.context[0], self.device)
            media_meta = {**options, "length": grid[0]}
            chunking = {"chunk": chunk, "context": self.context[0]}
        else:
            media, media_meta = self.modality.read(path, **self.options(self.modality.read))
            grid, chunking = list(media.shape[1:]), {}
            codes = self.model.encode(pad_to_multiple(media.unsqueeze(0).to(self.device), ds))[0].cpu()
        if self.modality.info:
            media_meta["source"] = self.modality.info(path)
        sizes = self.codebook_sizes()
        if len(sizes) < len(
            self.model.bottleneck.codebook_sizes()
        ):  # the first stages; one has no level axis
            codes = codes[: len(sizes)] if len(sizes) > 1 else codes[0]
        meta = CodesMeta(
            modality=self.modality.name,
            model_hash=self.model_hash,
            latent_grid=list(codes.shape[-self.modality.rank :]),
            codebook_sizes=sizes,
            original_shape=grid,
            media=media_meta,
            chunking=chunking,
        )
        return codes, meta

    def tokenize(self, path: Path, out: Path, audio: Tokenizer | None = None) -> str:
        """Write the codes of `path` to `out`; with an `audio` tokenizer, the audio track's codes too.
        Returns a note for the user ("" when there is nothing to say)."""
        refuse_input_as_output(out, [path])
        codes, meta = self.encode_file(path)
        # what the reader wants the user to know (the frame or track it used); not kept in the file
        notes = [meta.media.pop("note", ""), meta.media.get("source", {}).pop("note", "")]
        audio_codes = None
        if audio is not None:
            try:
                audio_codes = audio.encode_file(path)
                notes.append(audio_codes[1].media.get("source", {}).pop("note", ""))
            except VQTError as exc:
                notes.append(f"audio codes skipped ({str(exc).removeprefix(f'{path}: ')})")
        note = "; ".join(f"{path}: {n}" for n in notes if n)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_codes(out, codes, meta, audio_codes)
        return note

    def decode_pieces(self, codes: torch.Tensor, meta: CodesMeta, chunk: int = 0):
        """Media pieces (C, n, ...) along time at the original size, decoded `chunk` codes at a time
        (default: a chunk the size of the encoder's)."""
        ds = self.model.downsample[0]
        chunk = chunk or max(1, meta.chunking.get("chunk", 2048 * ds) // ds)
        time_dim = codes.dim() - self.modality.rank
        pieces = decode_stream(
            self._decode,
            codes,
            time_dim,
            ds,
            chunk,
            self.context[1],
            meta.original_shape[0],
            self.device,
        )
        for piece in pieces:
            cropped = crop_to(piece.float(), [piece.shape[1], *meta.original_shape[1:]])
            yield cropped.clamp(*self.modality.value_range)

    @torch.no_grad()
    def decode_file(self, codes_path: Path, out: Path, audio: Tokenizer | None = None) -> str:
        """Write media decoded from a codes file; with an `audio` tokenizer also the audio track's codes.
        Returns a note for the user ("" when there is nothing to say)."""
        refuse_input_as_output(out, [codes_path])
        codes, meta, audio_codes = read_codes_with_audio(codes_path)
        self.check(codes_path, meta)
        note = ""
        if audio_codes and audio is None:
            note = f"{codes_path}: holds audio codes too; give --audio-model to decode them"
        elif audio is not None and not audio_codes:
            note = f"{codes_path}: holds no audio codes; writing video only"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not self.modality.stream_writer:
            media = self._decode(codes.unsqueeze(0).to(self.device))[0].float().cpu()
            media = crop_to(media, meta.original_shape).clamp(*self.modality.value_range)
            self.modality.write(out, media, meta.media)
            return note
        tracks = {"write": self.decode_pieces(codes, meta)}
        rates = {"write": self.modality.rate(meta.media)}
        options = {}
        if audio is not None and audio_codes:
            audio.check(codes_path, audio_codes[1])
            tracks["write_audio"] = audio.decode_pieces(*audio_codes)
            rates["write_audio"] = audio.modality.rate(audio_codes[1].media)
            options["audio_rate"] = round(rates["write_audio"])  # samples per second of the audio track
        with self.modality.stream_writer(out, meta.media, **options) as writer:
            for method, piece in interleave(tracks, rates):
                getattr(writer, method)(piece)
        return note

    def check(self, source: Path, meta: CodesMeta) -> None:
        """Refuse codes made by another model: decoding them would give a silent wrong result."""
        if meta.modality != self.modality.name:
            raise VQTError(
                f"{source}: holds {meta.modality} codes but {self.run_dir} is a {self.modality.name} model"
            )
        if meta.model_hash != self.model_hash:
            raise VQTError(
                f"{source}: was made by another model (model hash {meta.model_hash}, "
                f"{self.run_dir} has {self.model_hash}); decode it with the model that made it"
            )
        if self.modality.check_media:
            try:
                self.modality.check_media(meta.media)
            except ValueError as exc:
                raise VQTError(f"{source}: media metadata is invalid: {str(exc)[:200]}") from None
        sizes = self.model.bottleneck.codebook_sizes()
        first_stages = (
            getattr(self.model.bottleneck, "residual", False)
            and meta.codebook_sizes == sizes[: len(meta.codebook_sizes)]
        )
        if meta.codebook_sizes != sizes and not first_stages:
            raise VQTError(f"{source}: codebook sizes {meta.codebook_sizes} do not match {self.run_dir}")
        ds = list(self.model.downsample)
        rank = self.modality.rank
        if len(meta.latent_grid) != rank:
            raise VQTError(
                f"{source}: holds a {len(meta.latent_grid)}-D code grid; {self.run_dir} decodes {rank}-D"
            )
        fits = [-(-size // factor) for size, factor in zip(meta.original_shape, ds)] == meta.latent_grid
        if len(ds) == rank and not fits:
            raise VQTError(
                f"{source}: original size {meta.original_shape} does not fit the code grid "
                f"{meta.latent_grid} at the downsampling {ds} of {self.run_dir}"
            )


def modality_of_input(path: Path) -> str:
    """The modality whose extensions include the suffix of `path` (of a folder: of its first media file)."""
    readers = {ext: entry.name for entry in registry("modalities") for ext in entry.factory.extensions}
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in readers and file.is_file():
                return readers[file.suffix.lower()]
        raise VQTError(f"{path}: holds no media file that any modality reads")
    if path.suffix.lower() not in readers:
        raise VQTError(f"{path}: no modality reads {path.suffix or 'files without a suffix'} files")
    return readers[path.suffix.lower()]


def codes_targets(files: list[Path], folder: Path) -> list[Path]:
    """The codes file in `folder` for each input, named after it; two inputs that would share one are refused
    before anything is written (a.png and sub/a.png, or a.png and a.jpg)."""
    targets: dict[Path, Path] = {}
    for file in files:
        target = folder / (file.stem + ".codes")
        if target in targets:
            raise VQTError(
                f"{file}: its codes would overwrite those of {targets[target]} (both {target.name}); "
                "tokenize one of them on its own"
            )
        targets[target] = file
    return list(targets)


def interleave(tracks: dict[str, Iterator[torch.Tensor]], rates: dict[str, float]):
    """(track, piece) pairs in time order: always the track that is furthest behind, so a muxer can
    write video and audio together without holding either in memory."""
    clocks = {name: 0.0 for name in tracks}
    live = dict(tracks)
    while live:
        name = min(live, key=clocks.__getitem__)
        piece = next(live[name], None)
        if piece is None:
            del live[name]
            continue
        clocks[name] += piece.shape[1] / rates[name]
        yield name, piece
