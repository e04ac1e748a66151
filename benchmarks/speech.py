"""Speech VQ-VAE: quality on held-out Asterisk prompts, side by side with vector-quantize-pytorch's
`VectorQuantize` around the same encoder/decoder (same K, D, decay, commitment weight, same steps, data
and seed), and the real-time factor of streaming `tokenize` and `decode` on this machine.

    python benchmarks/speech.py              # the recipe's budget (300 steps), ~80 held-out prompts
    python benchmarks/speech.py --quick      # 30 steps, 20 held-out prompts, 20 s of audio for the RTF
    python benchmarks/speech.py --json speech.json train.max_steps=1000

Held-out prompts come from the Debian package asterisk-core-sounds-en-g722 and are never among the
prompts that ship with the plugin (the training data). Extra arguments are recipe overrides for both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from peers import machine, paired_model
from torch.utils.data import ConcatDataset
from vqt_speech.dataset import speech_dataset
from vqt_speech.io import AudioWriter, read_audio
from vqt_speech.losses import si_snr

from vqtoolkit.config import load_recipe
from vqtoolkit.inference.tokenizer import Tokenizer
from vqtoolkit.plugins import registry
from vqtoolkit.rundir import resolve_device
from vqtoolkit.train.data import eval_loader
from vqtoolkit.train.evaluate import evaluate
from vqtoolkit.train.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "speech_vqvae_paper.yaml"
SHIPPED = ROOT / "plugins" / "vqt_speech" / "data" / "asterisk_small"
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
BYTES_PER_SECOND = 8000  # G.722


def held_out_prompts(count: int) -> list[Path]:
    shipped = {p.name for p in SHIPPED.glob("*.g722")}
    prompts = [
        p
        for p in sorted(ASTERISK.rglob("*.g722"))
        if "-".join(p.relative_to(ASTERISK).parts) not in shipped
        and p.parent.name != "silence"
        and 2 * BYTES_PER_SECOND < p.stat().st_size <= 30 * BYTES_PER_SECOND
    ]
    return prompts[:: max(1, len(prompts) // count)][:count]


def train(recipe, run_dir: Path, peer: bool) -> tuple[Trainer, float]:
    trainer = Trainer(recipe, run_dir=run_dir, model=paired_model(recipe, peer))
    start = time.perf_counter()
    trainer.fit()
    return trainer, time.perf_counter() - start


def real_time_factor(run_dir: Path, prompts: list[Path], seconds: float, work: Path) -> dict:
    """Seconds of compute per second of audio for streaming tokenize and decode of one long file."""
    clip = work / "long.wav"
    with AudioWriter(clip, 16000) as writer:
        total = 0
        for prompt in itertools.cycle(prompts):
            if total >= seconds * 16000:
                break
            audio, _ = read_audio(prompt)
            writer.write(audio)
            total += audio.shape[1]
    duration = total / 16000
    tokenizer = Tokenizer.load(run_dir, "auto")
    _ = tokenizer.context  # measured once per model, not per file: keep it out of the timing
    start = time.perf_counter()
    codes, meta = tokenizer.encode_file(clip)
    encoded = time.perf_counter()
    with AudioWriter(work / "recon.wav", 16000) as writer:
        for piece in tokenizer.decode_pieces(codes, meta):
            writer.write(piece)
    decoded = time.perf_counter()
    # chunking against one whole-file pass: codes identical, decoded audio without seams
    whole_codes, _ = tokenizer.encode_file(clip, chunk=(len(codes) + 1) * tokenizer.model.downsample[0])
    chunked_audio = torch.cat(list(tokenizer.decode_pieces(codes, meta)), 1)
    whole_audio = torch.cat(list(tokenizer.decode_pieces(codes, meta, chunk=len(codes) + 1)), 1)
    return {
        "audio_seconds": duration,
        "tokenize_rtf": (encoded - start) / duration,
        "decode_rtf": (decoded - encoded) / duration,
        "chunked_codes_identical": (whole_codes == codes).float().mean().item(),
        "chunked_vs_whole_decode_si_snr": si_snr(chunked_audio[None], whole_audio[None]).item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 steps, 20 held-out prompts")
    parser.add_argument("--prompts", type=int, help="held-out prompts to evaluate on (default 80)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--model", help="only the real-time factor and chunking figures, of this speech run")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for both models")
    args = parser.parse_args(argv)
    if not ASTERISK.is_dir():
        print(f"error: {ASTERISK} missing; apt-get install -y asterisk-core-sounds-en-g722", file=sys.stderr)
        return 1
    try:
        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        print("error: the peer is missing; pip install vector-quantize-pytorch", file=sys.stderr)
        return 1

    device = resolve_device(args.device).type
    if args.model:  # no training: streaming speed and chunking of an existing run
        with tempfile.TemporaryDirectory() as tmp:
            figures = real_time_factor(Path(args.model), held_out_prompts(20), 60, Path(tmp))
        for key, value in figures.items():
            print(f"{key:32}{value:12.4f}")
        rtf = f"tokenize RTF {figures['tokenize_rtf']:.4f}, decode RTF {figures['decode_rtf']:.4f}"
        identical, seams = figures["chunked_codes_identical"], figures["chunked_vs_whole_decode_si_snr"]
        print(
            f"speech streaming: {rtf}, chunked codes {identical:.2%} identical to whole-file codes, "
            f"chunked vs whole decode SI-SNR {seams:.1f} dB ({device})"
        )
        return 0
    overrides = [f"train.device={device}", "train.picture_every=0", "train.eval_batches=1"]
    overrides += ["train.max_steps=30"] if args.quick else []
    recipe = load_recipe(RECIPE, overrides + args.overrides)
    prompts = held_out_prompts(args.prompts or (20 if args.quick else 80))
    modality = registry("modalities").get("speech")
    metrics = {name: registry("metrics").get(name) for name in modality.metrics}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        held = work / "held_out"
        held.mkdir()
        for prompt in prompts:
            (held / prompt.name).symlink_to(prompt)
        options = {"sample_rate": 16000, **recipe.data.options}
        splits = [speech_dataset(str(held), split, 1, **options) for split in ("train", "test")]
        held_out = ConcatDataset(splits)
        results = {}
        for name, peer in (("vqtoolkit", False), ("vector-quantize-pytorch", True)):
            trainer, seconds = train(recipe, work / name, peer)
            loader = eval_loader(held_out, recipe.train.batch_size)
            scores = evaluate(trainer.model, loader, metrics, trainer.device, modality.value_range)
            results[name] = {**scores, "train_seconds": seconds}
        seconds = 20 if args.quick else 60
        results["vqtoolkit"].update(real_time_factor(work / "vqtoolkit", prompts, seconds, work))

    ours, peer = results["vqtoolkit"], results["vector-quantize-pytorch"]
    keys = ["si_snr", "log_mel_distance", "codebook_used_fraction", "codebook_perplexity", "train_seconds"]
    print(f"{'':28}{'vqtoolkit':>14}{'vq-pytorch':>14}")
    for key in keys:
        print(f"{key:28}{ours[key]:14.3f}{peer[key]:14.3f}")
    print(f"{'tokenize real-time factor':28}{ours['tokenize_rtf']:14.4f}")
    print(f"{'decode real-time factor':28}{ours['decode_rtf']:14.4f}")
    print(f"{'chunked = whole-file codes':28}{ours['chunked_codes_identical']:14.4f}")
    print(f"{'chunked vs whole SI-SNR dB':28}{ours['chunked_vs_whole_decode_si_snr']:14.1f}")
    steps, k = recipe.train.max_steps, recipe.bottleneck.args["codebook_size"]
    print(
        f"speech VQ-VAE: SI-SNR {ours['si_snr']:.2f} dB vs {peer['si_snr']:.2f} dB (vector-quantize-pytorch),"
        " "
        f"codes used {ours['codebook_used_fraction']:.0%} vs {peer['codebook_used_fraction']:.0%}, "
        f"tokenize RTF {ours['tokenize_rtf']:.3f}, decode RTF {ours['decode_rtf']:.3f} "
        f"(K={k}, {steps} steps, {len(prompts)} held-out prompts, {device})"
    )
    if args.json:
        report = {"results": results, "prompts": len(prompts), "machine": machine(device)}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
