"""`vqt tokenize DIR --dataset OUT`: the codes of a whole corpus as a code dataset (see vqtoolkit.data).

The sorted files are cut into shards of `shard_files` files; under torchrun, rank r tokenizes shards r,
r + N, r + 2N... Each shard is written whole or not at all, so a rerun of the same command after a kill
skips the shards that are there. Rank 0 then writes the index and the report from the shards alone, so
the dataset is the same however many processes made it, and however often it was resumed.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from vqtoolkit import data, parallel
from vqtoolkit.errors import VQTError, one_line
from vqtoolkit.inference.tokenizer import Tokenizer
from vqtoolkit.media import first_line
from vqtoolkit.progress import progress

SKIPS_SHOWN = 20  # skipped files named on stderr; report.json lists them all


def plan(tokenizer: Tokenizer, files: list[Path], shard_files: int, chunk: int) -> dict:
    """The manifest of the dataset these files and this model make: a rerun must match it to resume."""
    listing = hashlib.sha256("\n".join(map(str, files)).encode()).hexdigest()
    return {
        "format": data.FORMAT,
        "version": data.VERSION,
        "model": str(tokenizer.run_dir),
        "model_hash": tokenizer.model_hash,
        "modality": tokenizer.modality.name,
        "codebook_sizes": tokenizer.codebook_sizes(),
        "options": {"codebooks": tokenizer.codebooks, "chunk": chunk, "shard_files": shard_files},
        "files": len(files),
        "files_sha256": listing,
        "shards": math.ceil(len(files) / shard_files),
    }


def prepare(out: Path, manifest: dict) -> None:
    """Start the dataset folder, or check that the one there is this dataset, part way."""
    if (out / data.MANIFEST).is_file():
        there = data.read_json(out / data.MANIFEST)
        # the model by its hash: the same run named by another path resumes
        differs = [key for key in manifest if key != "model" and there.get(key) != manifest[key]]
        if differs:
            raise VQTError(
                f"{out}: holds a code dataset of other {', '.join(differs)}; give another folder (or remove "
                "this one) to start afresh, or the same model, files and options to resume"
            )
        for stale in out.glob(".*.tmp"):  # a killed run's half-written files (see files.atomic_write)
            stale.unlink()
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VQTError(f"{out}: exists and is not a code dataset; give an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    data.write_json(out / data.MANIFEST, manifest)


def finished(path: Path, number: int, files: list[Path]) -> bool:
    """A shard that a run wrote whole for these files (a rerun skips it)."""
    if not path.is_file():
        return False
    try:
        _, meta = data.read_arrow(path, {"path": "string"})
    except VQTError:
        return False  # unreadable: made again
    return meta.get("shard") == number and meta.get("sources") == [str(f) for f in files]


def tokenize_shard(tokenizer: Tokenizer, files: list[Path], number: int, path: Path, chunk: int, bar) -> None:
    specs = data.shard_columns(tokenizer.codebook_sizes())
    columns: dict[str, list] = {name: [] for name in specs}
    failures = []
    for file in files:
        try:
            codes, meta = tokenizer.encode_file(file, chunk)
        except VQTError as exc:
            failures.append({"path": str(file), "error": first_line(exc)})
            bar.update(1)
            continue
        meta.media.pop("note", None)
        meta.media.get("source", {}).pop("note", None)
        columns["codes"].append(codes.numpy().ravel())
        columns["path"].append(str(file))
        columns["shape"].append(list(codes.shape))
        columns["grid"].append(meta.latent_grid)
        columns["duration_s"].append(tokenizer.modality.duration(meta.media, meta.original_shape[0]))
        columns["meta"].append(json.dumps(asdict(meta)))
        bar.update(1)
    sources = [str(f) for f in files]
    data.write_arrow(path, columns, specs, {"shard": number, "sources": sources, "failures": failures})


def write_index(out: Path, manifest: dict) -> dict:
    """index.arrow and report.json from the finished shards; returns the report."""
    index: dict[str, list] = {name: [] for name in data.INDEX_COLUMNS}
    failures, seconds = [], 0.0
    for number in range(manifest["shards"]):
        table, meta = data.read_arrow(out / data.shard_name(number), {"path": "string"})
        failures += meta.get("failures", [])
        offsets = table.column("codes").chunks[0].offsets.to_pylist()
        for row, item in enumerate(table.select(["path", "shape", "grid", "duration_s"]).to_pylist()):
            index["path"].append(item["path"])
            index["shard"].append(number)
            index["row"].append(row)
            index["offset"].append(offsets[row])
            index["length"].append(offsets[row + 1] - offsets[row])
            index["shape"].append(item["shape"])
            index["grid"].append(item["grid"])
            index["duration_s"].append(item["duration_s"])
            index["model_hash"].append(manifest["model_hash"])
            seconds += item["duration_s"] or 0.0
    data.write_arrow(out / data.INDEX, index, data.INDEX_COLUMNS, {"items": len(index["path"])})
    report = {"files": manifest["files"], "tokenized": len(index["path"]), "skipped": failures}
    if seconds:
        report["media_seconds"] = round(seconds, 3)
    data.write_json(out / data.REPORT, report)
    return report


def tokenize_corpus(
    tokenizer: Tokenizer, files: list[Path], out: Path, shard_files: int = 256, chunk: int = 0
) -> dict | None:
    """Tokenize `files` into the code dataset `out` (this process's shards under torchrun); rank 0 returns
    the report, the other ranks None."""
    if shard_files < 1:
        raise VQTError(f"--shard-files {shard_files}: a shard holds at least one file")
    ranks = parallel.current()
    manifest = plan(tokenizer, files, shard_files, chunk)
    ready = True
    if ranks.main:
        try:
            prepare(out, manifest)
        except VQTError:
            ready = False
            raise
        finally:
            # the other ranks wait for the folder, and stop if rank 0 did
            parallel.main_says(ready, tokenizer.device)
    elif not parallel.main_says(True, tokenizer.device):
        raise VQTError(f"{out}: refused by rank 0")  # which said why
    mine = range(ranks.rank, manifest["shards"], ranks.world_size)
    shards = [(n, files[n * shard_files : (n + 1) * shard_files]) for n in mine]
    todo = [(n, part) for n, part in shards if not finished(out / data.shard_name(n), n, part)]
    done_files = sum(len(part) for _, part in shards) - sum(len(part) for _, part in todo)
    label = f"tokenize (rank {ranks.rank} of {ranks.world_size})" if ranks.active else "tokenize"
    total = sum(len(part) for _, part in shards)
    bar = progress(total=total, initial=done_files, desc=label, unit="file", disable=not ranks.main)
    with bar:
        for number, part in todo:
            tokenize_shard(tokenizer, part, number, out / data.shard_name(number), chunk, bar)
    parallel.barrier()  # every shard is written; the ranks leave together in parallel.shutdown
    if not ranks.main:
        return None
    report = write_index(out, manifest)
    for failure in report["skipped"][:SKIPS_SHOWN]:
        print(one_line(f"skipped {failure['path']}: {failure['error']}"), file=sys.stderr)
    if len(report["skipped"]) > SKIPS_SHOWN:
        print(f"... and {len(report['skipped']) - SKIPS_SHOWN} more in {out / data.REPORT}", file=sys.stderr)
    return report
