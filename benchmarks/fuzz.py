"""Byte-flip fuzzing of every media reader: real files, mutated, read in a worker process.

    python benchmarks/fuzz.py --cases 1000 --json fuzz.json
    python benchmarks/fuzz.py --quick                          # 100 cases

Seeds are real files: the shipped samples (Fashion-MNIST IDX, Asterisk G.722 prompts, the Big Buck Bunny
clip) and small wav/flac/mp3/ogg/m4a/png/jpeg/bmp/webp/npz/mp4/webm/mkv files and a codes file made here.
Each case picks a seed and a reader for it, mutates the bytes (flip bits, overwrite bytes, truncate, cut
out, duplicate or insert a run), keeping the name, and reads the result. A reader must give a valid read
or a VQTError naming the file, nothing else: another exception counts as "unexpected", a worker killed by
a signal (a segfault in FFmpeg) as "crash", a case over --timeout seconds as "hang". The worker is a
separate process, restarted after a crash or hang. Seeded: the same --seed gives the same cases.
Exit code 1 when any case was unexpected, crashed or hung.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTCOMES = ("ok", "clean error", "unexpected", "crash", "hang")
READERS = {  # seed suffix -> readers that take it
    "image": ("read_image", "image_size"),
    "idx": ("read_idx",),
    "npz": ("read_npz",),
    "audio": ("read_audio", "stream_audio", "audio_info"),
    "video": ("read_video", "stream_video", "video_info", "read_audio"),
    "codes": ("read_codes",),
    "codes-meta": ("read_codes",),  # a codes file whose metadata values are replaced by hostile ones
    "recipe": ("validate_recipe",),  # a shipped recipe with hostile values or mangled text
}
STRUCTURED = ("codes-meta", "recipe")  # mutated by value, not by byte
HOSTILE = [
    -1,
    0,
    2**63,
    -(2**63),
    1e308,
    float("nan"),
    float("inf"),
    "x",
    "",
    True,
    None,
    [],
    {},
    [[[[1]]]],
    {"a": {"b": {"c": 1}}},
    "a" * 5000,
    [1] * 1000,
    0.5,
    -0.5,
    "16000",
    [2, "x"],
    {"name": "os.system"},
]


# ---------------------------------------------------------------- the worker (a separate process)


def reader_function(name: str):
    """The reader called `name`, imported when first asked for (the self-test readers import nothing)."""
    if name.startswith("selftest_"):  # for checking that crashes and hangs are caught and counted
        return {
            "selftest_ok": lambda p: None,
            "selftest_crash": lambda p: os.kill(os.getpid(), signal.SIGSEGV),
            "selftest_hang": lambda p: time.sleep(3600),
        }[name]
    from vqt_image.io import image_size, read_idx, read_image, read_npz
    from vqt_speech.io import audio_info, read_audio, stream_audio
    from vqt_video.io import read_video, stream_video, video_info

    from vqtoolkit.inference.codes import read_codes_with_audio

    return {
        "read_image": lambda p: read_image(p, 3),
        "image_size": image_size,
        "read_idx": read_idx,
        "read_npz": read_npz,
        "read_audio": read_audio,
        "stream_audio": lambda p: sum(piece.shape[-1] for piece in stream_audio(p, chunk=16000)),
        "audio_info": audio_info,
        "read_video": lambda p: read_video(p, max_frames=64),
        "stream_video": lambda p: sum(piece.shape[1] for piece in stream_video(p, chunk=16)),
        "video_info": video_info,
        "read_codes": read_codes_with_audio,
        "validate_recipe": _validate_recipe,
    }[name]


def _validate_recipe(path: Path) -> None:
    """What `vqt validate` does: load and check the recipe, then size its model on the meta device."""
    from vqtoolkit.config import load_recipe
    from vqtoolkit.model import check_model_size

    recipe = load_recipe(path)
    if not recipe.tokenizer:
        check_model_size(recipe, str(path))


def worker() -> None:
    """Read `reader path` lines from stdin; answer one JSON line per case on the real stdout."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the answers
    from vqtoolkit.errors import VQTError
    from vqtoolkit.memory import peak_kib, restart_peak
    from vqtoolkit.plugins import registry

    # imports and plugin loading up front, so that the memory a case reports is the case's own
    reader_function("read_image")
    registry("modalities")
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        reader, path = line.rstrip("\n").split(" ", 1)
        start_kib = restart_peak()
        try:
            reader_function(reader)(Path(path))
            answer = {"outcome": "ok"}
        except VQTError as exc:
            message = str(exc)
            # the file named first, with a line number for recipes ("recipe.yaml:12: ...")
            named = re.match(rf"{re.escape(str(path))}(:\d+)?: ", message) is not None and "\n" not in message
            answer = {"outcome": "clean error" if named else "unexpected", "detail": message[:300]}
        except Exception as exc:  # noqa: BLE001 - the point: anything else is a reader bug
            answer = {"outcome": "unexpected", "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}
        answer["growth_mib"] = round((peak_kib() - start_kib) / 1024, 1)
        answers.write(json.dumps(answer) + "\n")


class Worker:
    """The worker process, with a per-case timeout; restarted after a crash or a hang."""

    def __init__(self, timeout: float):
        self.timeout, self.process, self.starts = timeout, None, 0

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.starts += 1
        ready = self._answer(120)
        if not ready or not ready.get("ready"):
            raise RuntimeError("the fuzz worker did not start")

    def _answer(self, timeout: float) -> dict | None:
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        events = selector.select(timeout)
        selector.close()
        if not events:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {"outcome": "crash", "detail": f"exit {self.process.wait()}"}

    def run(self, reader: str, path: Path) -> dict:
        if self.process is None or self.process.poll() is not None:
            self._start()
        try:
            self.process.stdin.write(f"{reader} {path}\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.close()
            return {"outcome": "crash", "detail": "worker gone"}
        answer = self._answer(self.timeout)
        if answer is None:
            self.close()
            return {"outcome": "hang", "detail": f"no answer in {self.timeout} s"}
        if answer["outcome"] == "crash":
            self.close()
        return answer

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# ---------------------------------------------------------------- seeds and mutations


def make_seeds(folder: Path) -> list[tuple[str, Path]]:
    """(kind, path) of the seed files: shipped samples and small files made with PyAV, PIL and numpy."""
    import av
    import numpy as np
    import torch
    from vqt_image.io import read_idx, write_image
    from vqt_speech.io import write_audio
    from vqt_video.io import write_video

    from vqtoolkit.inference.codes import CodesMeta, write_codes

    torch.manual_seed(0)
    seeds = [
        ("idx", ROOT / "plugins/vqt_image/data/fashion_mnist_small/t10k-images-idx3-ubyte.gz"),
        ("idx", ROOT / "plugins/vqt_image/data/fashion_mnist_small/t10k-labels-idx1-ubyte.gz"),
        ("video", ROOT / "plugins/vqt_video/data/bigbuckbunny/bigbuckbunny_64.mp4"),
    ]
    prompts = sorted((ROOT / "plugins/vqt_speech/data/asterisk_small").glob("*.g722"))
    seeds += [("audio", p) for p in sorted(prompts, key=lambda p: p.stat().st_size)[:3]]

    t = torch.arange(8000) / 16000
    speech = (0.3 * torch.sin(2 * torch.pi * 300 * t) * torch.sin(2 * torch.pi * 3 * t))[None]
    for suffix in (".wav", ".flac", ".opus"):
        write_audio(folder / f"tone{suffix}", speech, sample_rate=16000)
        seeds.append(("audio", folder / f"tone{suffix}"))
    for suffix, codec in ((".mp3", "libmp3lame"), (".m4a", "aac")):
        with av.open(str(folder / f"tone{suffix}"), "w") as container:
            stream = container.add_stream(codec, rate=16000, layout="mono")
            frame = av.AudioFrame.from_ndarray(speech.numpy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        seeds.append(("audio", folder / f"tone{suffix}"))

    y, x = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 20), indexing="ij")
    picture = torch.stack([x, y, (x + y) / 2])
    for suffix in (".png", ".jpg", ".bmp", ".webp"):
        write_image(folder / f"picture{suffix}", picture)
        seeds.append(("image", folder / f"picture{suffix}"))
    np.savez(folder / "pictures.npz", images=(picture[None] * 255).to(torch.uint8).numpy())
    seeds.append(("npz", folder / "pictures.npz"))

    clip = torch.stack([picture.roll(shift, dims=2) for shift in range(6)], dim=1)[:, :, :16, :16]
    write_video(folder / "clip.mp4", clip, {"fps": 25})
    seeds.append(("video", folder / "clip.mp4"))
    for suffix, codec in ((".webm", "libvpx-vp9"), (".mkv", "mpeg4")):
        with av.open(str(folder / f"clip{suffix}"), "w") as container:
            stream = container.add_stream(codec, rate=25)
            stream.width = stream.height = 16
            stream.pix_fmt = "yuv420p"
            for index in range(clip.shape[1]):
                image = (clip[:, index].permute(1, 2, 0) * 255).to(torch.uint8).numpy()
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        seeds.append(("video", folder / f"clip{suffix}"))

    images = read_idx(seeds[0][1])[:16].numpy()  # a small uncompressed IDX: its header gets fuzzed too
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    (folder / "images-idx3-ubyte").write_bytes(header + images.tobytes())
    seeds.append(("idx", folder / "images-idx3-ubyte"))

    meta = CodesMeta("image", "0123456789abcdef", [6, 5], [32], [24, 20], {"height": 24, "width": 20})
    audio_meta = CodesMeta("speech", "fedcba9876543210", [4], [16, 16], [256], {"sample_rate": 16000})
    audio = (torch.randint(0, 16, (2, 4)), audio_meta)
    write_codes(folder / "picture.codes", torch.randint(0, 32, (6, 5)), meta, audio)
    seeds.append(("codes", folder / "picture.codes"))
    seeds.append(("codes-meta", folder / "picture.codes"))
    for name in ("image_vqvae", "speech_vqvae", "video_vqvae", "image_prior"):
        seeds.append(("recipe", ROOT / "recipes" / f"{name}.yaml"))
    return seeds


def mutate_structured(kind: str, data: bytes, rng: random.Random) -> bytes:
    """Replace one value deep inside a codes file's metadata or a recipe with a hostile one (half the
    recipe cases mutate its text by byte instead)."""
    import yaml
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save as save_bytes

    value = rng.choice(HOSTILE)
    if kind == "recipe":
        if rng.random() < 0.5:
            return mutate(data, rng)
        tree = yaml.safe_load(data)
        node = tree
        while isinstance(node, dict) and node and rng.random() < 0.7:
            key = rng.choice(list(node))
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if isinstance(node, dict):
            node[rng.choice([*node, "extra"]) if node else "extra"] = value
        return yaml.safe_dump(tree).encode()
    tensors = load_bytes(data)
    header_length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_length])["__metadata__"]
    key = rng.choice(sorted(metadata))  # safetensors writes its metadata in no fixed order
    if key in ("media", "chunking", "audio") and rng.random() < 0.5:  # deep inside a mapping
        inner = json.loads(metadata[key])
        if isinstance(inner, dict) and inner:
            inner[rng.choice(sorted(inner))] = value
        metadata[key] = json.dumps(inner)
    else:
        metadata[key] = json.dumps(value) if rng.random() < 0.8 else str(value)
    return save_bytes(tensors, metadata=metadata)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation of a file's bytes (always a change, never the empty file)."""
    data = bytearray(data)
    size = len(data)
    kind = rng.choice(["flip bits", "overwrite", "truncate", "cut", "duplicate", "insert", "header"])
    if kind == "flip bits":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(size)] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        start = rng.randrange(size)
        data[start : start + rng.randint(1, 16)] = rng.randbytes(rng.randint(1, 16))
    elif kind == "truncate":
        data = data[: rng.randrange(1, size)]
    elif kind == "cut":
        start = rng.randrange(size)
        del data[start : start + rng.randint(1, max(1, size // 4))]
    elif kind == "duplicate":
        start = rng.randrange(size)
        data[start:start] = data[start : start + rng.randint(1, 256)]
    elif kind == "insert":
        start = rng.randrange(size)
        data[start:start] = rng.randbytes(rng.randint(1, 64))
    else:  # the header decides the most: flip bytes among the first 64
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(64, size))] = rng.randrange(256)
    return bytes(data) if bytes(data) else b"\0"


def fuzz(cases: int, seed: int, timeout: float, log=print, keep: Path | None = None) -> dict:
    rng = random.Random(seed)
    counts: dict[str, Counter] = defaultdict(Counter)
    growth: dict[str, float] = defaultdict(float)  # the most a case of each reader grew the worker, MiB
    failures = []
    with tempfile.TemporaryDirectory(prefix="vqt_fuzz_") as temp:
        temp = Path(temp)
        (temp / "seeds").mkdir()
        seeds = make_seeds(temp / "seeds")
        originals = {path: path.read_bytes() for _, path in seeds}
        worker = Worker(timeout)
        started = time.perf_counter()
        try:
            for index in range(cases):
                kind, source = rng.choice(seeds)
                reader = rng.choice(READERS[kind])
                target = temp / f"case{index % 8}{source.suffix}"
                if source.name.endswith(".gz"):
                    target = temp / f"case{index % 8}-{source.name}"
                mutated = (
                    mutate_structured(kind, originals[source], rng)
                    if kind in STRUCTURED
                    else mutate(originals[source], rng)
                )
                target.write_bytes(mutated)
                answer = worker.run(reader, target)
                counts[reader][answer["outcome"]] += 1
                growth[reader] = max(growth[reader], answer.get("growth_mib", 0.0))
                if answer["outcome"] not in ("ok", "clean error"):
                    failures.append({"case": index, "reader": reader, "seed_file": source.name, **answer})
                    log(f"case {index}: {reader} on mutated {source.name}: {answer}")
                    failed = (keep or temp) / f"failed{index}{target.suffix}"
                    failed.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(target, failed)
        finally:
            worker.close()
        seconds = time.perf_counter() - started
    totals = Counter()
    for per_reader in counts.values():
        totals.update(per_reader)
    return {
        "cases": cases,
        "seed": seed,
        "timeout_s": timeout,
        "seconds": round(seconds, 1),
        "worker_starts": worker.starts,
        "seed_files": [f"{kind}:{path.name}" for kind, path in seeds],
        "totals": {outcome: totals[outcome] for outcome in OUTCOMES},
        "readers": {name: {o: c[o] for o in OUTCOMES} for name, c in sorted(counts.items())},
        "peak_growth_mib": dict(sorted(growth.items())),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0, help="Seconds a case may take (a hang).")
    parser.add_argument("--quick", action="store_true", help="100 cases.")
    parser.add_argument("--json", help="Also write the results here.")
    parser.add_argument("--keep", type=Path, help="Keep the files of failed cases in this folder.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    results = fuzz(100 if args.quick else args.cases, args.seed, args.timeout, keep=args.keep)
    width = max(len(name) for name in results["readers"])
    print(f"{'reader':<{width}}  " + "  ".join(f"{o:>11}" for o in OUTCOMES) + "  peak growth MiB")
    for name, row in results["readers"].items():
        peak = results["peak_growth_mib"][name]
        print(f"{name:<{width}}  " + "  ".join(f"{row[o]:>11}" for o in OUTCOMES) + f"  {peak:>15.1f}")
    print(f"{'total':<{width}}  " + "  ".join(f"{results['totals'][o]:>11}" for o in OUTCOMES))
    print(f"{results['cases']} cases in {results['seconds']} s (seed {results['seed']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    bad = sum(results["totals"][o] for o in ("unexpected", "crash", "hang"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
