"""Corpus tokenization throughput: `vqt tokenize DIR --dataset OUT` on a folder of real speech files, in
one process (2 torch threads) and in two (`--nproc 2`, one thread each), against the bound of a pipeline
that overlaps its two halves perfectly: max(decode alone, forward alone).

    python benchmarks/tokenize_corpus.py                       # 600 files of the corpus's training split
    python benchmarks/tokenize_corpus.py --files 100 --json tokenize.json

Data: the first FILES files (sorted) of `data/speech/train` (`vqt speech-corpus data/speech`), copied into
a temporary folder; model: the shipped speech codec (`--model speech`). Each command is run whole, as a
user runs it (interpreter start, model load, index and report included), and the two are interleaved
over the repeats; medians. Their start alone (the same command on one file) is given beside them.

The halves, in this process, each over the same files:
- decode alone: the modality's stream reader (PyAV) over every file, pieces as `vqt tokenize` reads them;
- forward alone: the same tokenizer's `encode_file` with those pieces already in memory;
each timed one file at a time (forward with 2 torch threads) and two files at once (two Python threads of
one torch thread each), and the faster counts.
A run cannot beat the larger of the two, since every file needs both; a figure above it means the bound
is wrong. Run on an otherwise idle machine: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from peers import machine

from vqtoolkit.data import REPORT
from vqtoolkit.inference.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "speech" / "train"


def corpus_files(count: int, folder: Path) -> list[Path]:
    files = sorted(
        p for p in CORPUS.rglob("*") if p.suffix.lower() in (".wav", ".g722", ".flac") and p.is_file()
    )
    if len(files) < count:
        sys.exit(f"{CORPUS}: {len(files)} files, {count} asked for (build it: vqt speech-corpus data/speech)")
    for number, file in enumerate(files[:count]):  # flat and numbered: the same order as the corpus
        shutil.copy(file, folder / f"{number:05d}{file.suffix}")
    return sorted(folder.iterdir())


def two_at_once(work, files: list[Path]) -> float:
    """Seconds for `work(file)` over `files` in two Python threads (torch and PyAV release the GIL), each
    with one torch thread: both cores busy without intra-op parallelism."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(work, files))
    return time.perf_counter() - started


def one_at_a_time(work, files: list[Path], threads: int) -> float:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    for file in files:
        work(file)
    return time.perf_counter() - started


def halves(files: list[Path]) -> dict[str, float]:
    """Seconds of decoding alone and of the forward pass alone over `files`, each the faster of one file
    at a time (decode: 1 thread; forward: 2 torch threads) and two files at once (1 torch thread each)."""
    tokenizer = Tokenizer.load("speech", "cpu")
    modality = tokenizer.modality
    options = tokenizer.options(modality.stream)
    chunk = inspect.signature(modality.stream).parameters["chunk"].default
    pieces, sources = {}, {}

    def decode(file: Path) -> None:
        pieces[file] = list(modality.stream(file, chunk=chunk, **options))
        sources[file] = modality.info(file) if modality.info else None

    decode_s = {
        "1 file at a time": one_at_a_time(decode, files, 1),
        "2 files at once": two_at_once(decode, files),
    }
    seconds = sum(sum(p.shape[1] for p in parts) for parts in pieces.values()) / options["sample_rate"]
    in_memory = dataclasses.replace(
        modality,
        stream=lambda path, chunk, **_: iter(pieces[path]),
        info=(lambda path: sources[path]) if modality.info else None,
    )
    tokenizer = dataclasses.replace(tokenizer, modality=in_memory)

    def forward(file: Path) -> None:
        tokenizer.encode_file(file, chunk)

    forward_s = {
        "1 file at a time": one_at_a_time(forward, files, 2),
        "2 files at once": two_at_once(forward, files),
    }
    return {"decode": decode_s, "forward": forward_s, "media_s": seconds}


def command_seconds(inputs: Path, out: Path, processes: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    threads = ["--threads", "2"] if processes == 1 else []
    command = [sys.executable, "-m", "vqtoolkit", *threads, "tokenize", str(inputs), "--model", "speech",
               "--dataset", str(out), "--shard-files", "64", "--nproc", str(processes)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if processes > 1 else dict(os.environ)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs, one = Path(tmp) / "corpus", Path(tmp) / "one"
        inputs.mkdir()
        one.mkdir()
        files = corpus_files(args.files, inputs)
        shutil.copy(files[0], one / files[0].name)
        print(f"{len(files)} files; the halves", file=sys.stderr, flush=True)
        half = halves(files)
        times: dict[str, list[float]] = {"1 process": [], "2 processes": [], "start": []}
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1} of {args.repeats}", file=sys.stderr, flush=True)
            times["1 process"].append(command_seconds(inputs, Path(tmp) / "out1", 1))
            times["2 processes"].append(command_seconds(inputs, Path(tmp) / "out2", 2))
            times["start"].append(command_seconds(one, Path(tmp) / "start", 1))
        report = json.loads((Path(tmp) / "out1" / REPORT).read_text())
        same = all(
            (Path(tmp) / "out1" / p.name).read_bytes() == p.read_bytes()
            for p in (Path(tmp) / "out2").iterdir()
        )
    median = {name: statistics.median(values) for name, values in times.items()}
    decode, forward = min(half["decode"].values()), min(half["forward"].values())
    bound = max(decode, forward)
    media = half["media_s"]
    rows = [(f"decode alone, {way}", value) for way, value in half["decode"].items()]
    rows += [(f"forward alone, {way}", value) for way, value in half["forward"].items()]
    rows += [
        ("bound: max(decode, forward), the faster way of each", bound),
        ("vqt tokenize --dataset, 1 process, 2 threads", median["1 process"]),
        ("vqt tokenize --dataset --nproc 2, 1 thread each", median["2 processes"]),
    ]
    print(f"| {len(files)} files, {media / 3600:.2f} h of speech | seconds | files/s | media s/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {len(files) / seconds:.1f} | {media / seconds:.0f} |")
    print(f"| (start alone: the command on one file) | {median['start']:.1f} | | |")
    best = min(median["1 process"], median["2 processes"])
    scaling = median["1 process"] / median["2 processes"]
    print(f"tokenize throughput: best {len(files) / best:.1f} files/s ({media / best:.0f} media s/s), "
          f"{best / bound:.2f}x the bound; 2 processes {scaling:.2f}x one; datasets identical: {same}; "
          f"{report['tokenized']} items; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    if args.json:
        figures = {
            "files": len(files),
            "media_s": media,
            "halves": half,
            "commands_s": times,
            "identical": same,
        }
        Path(args.json).write_text(json.dumps({**figures, "machine": machine()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
