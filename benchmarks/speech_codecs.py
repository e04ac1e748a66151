"""Speech codec quality on held-out speakers: the toolkit's speech tokenizers against codec2, Opus and
AMR-NB on the same audio, at the bitrate each really spends.

    python benchmarks/speech_codecs.py                         # the shipped default model
    python benchmarks/speech_codecs.py --model runs/speech_vqvae --model speech
    python benchmarks/speech_codecs.py --quick --json out.json
    python benchmarks/speech_codecs.py --curve runs/speech_vqvae   # every snapshot: quality vs hours

Metrics per clip, averaged: STOI (pystoi), PESQ wideband (pesq), SI-SNR and log-mel distance, each
after aligning the decoded audio on the reference by its energy envelope (codecs delay their output; a
model that does not keep the waveform's phase defeats a waveform cross-correlation). The toolkit's bitrate
is the codes files' own: code frames x bits per code / seconds. Codec2 and AMR-NB code 8 kHz audio (their
input is downsampled and their output upsampled back to 16 kHz, as a user of them would); Opus codes the
16 kHz audio.

Needs `pip install -e '.[bench]'` (pesq, pystoi), Debian `codec2` (c2enc/c2dec), and held-out speech:
the corpus of `vqt speech-corpus data/speech` (its test/ speakers), or `--clips FOLDER`. Without either,
the held-out clips that ship with the speech plugin are used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional as AF
from vqt_speech.io import read_audio
from vqt_speech.losses import log_mel_distance, si_snr

from vqtoolkit.inference.codes import read_codes
from vqtoolkit.inference.tokenizer import Tokenizer
from vqtoolkit.rundir import file_hash, load_weights, read_metadata

ROOT = Path(__file__).resolve().parent.parent
CORPUS_TEST = ROOT / "data" / "speech" / "test"
SHIPPED_HELD_OUT = ROOT / "plugins" / "vqt_speech" / "data" / "heldout"
RATE = 16000
CODEC2_MODES = (3200, 2400, 1600, 1200)
OPUS_KBPS = (6, 8, 12)
MIN_SECONDS, MAX_SECONDS = 2.0, 8.0
TABLE_HEAD = "| codec | kbps | STOI | PESQ-WB | SI-SNR dB | log-mel |\n| --- |" + " ---: |" * 5


def held_out_clips(folder: Path, per_speaker: int) -> list[Path]:
    """`per_speaker` clips of 2-8 s from each speaker folder, spread evenly over its sorted files."""
    speakers = sorted(p for p in folder.iterdir() if p.is_dir()) or [folder]
    clips = []
    for speaker in speakers:
        files = sorted(f for f in speaker.iterdir() if f.suffix in (".wav", ".g722", ".flac"))
        fitting = [f for f in files if MIN_SECONDS <= av_seconds(f) <= MAX_SECONDS]
        step = max(1, len(fitting) // per_speaker)
        clips += fitting[::step][:per_speaker]
    return clips


def av_seconds(path: Path) -> float:
    try:
        with av.open(str(path), format="g722" if path.suffix == ".g722" else None) as container:
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return float(container.duration or 0) / av.time_base
    except (av.error.FFmpegError, IndexError):
        return 0.0


# ---------------------------------------------------------------- scoring


def align(reference: np.ndarray, degraded: np.ndarray, max_lag: int = 4000) -> np.ndarray:
    """`degraded` shifted so its energy envelope (20 ms windows, 1 ms hop) best matches the reference's,
    cut or zero-padded to the reference's length."""
    hop, window = 16, 320

    def envelope(x: np.ndarray) -> np.ndarray:
        power = np.convolve(x.astype(np.float64) ** 2, np.ones(window) / window, mode="same")[::hop]
        # 50 dB under the loudest window is silence: digital zeros must not outweigh the speech
        return np.log(np.maximum(power, power.max() * 1e-5 + 1e-12))

    a, b = envelope(reference), envelope(degraded)
    a, b = a - a.mean(), b - b.mean()
    reach = max_lag // hop
    # b padded by `reach` on both sides: score j is the match of a with b delayed by (j - reach) steps
    padded = np.zeros(len(a) + 2 * reach)
    padded[reach : reach + min(len(a) + reach, len(b))] = b[: len(a) + reach]
    coarse = (int(np.argmax(np.correlate(padded, a, mode="valid"))) - reach) * hop
    # then to the sample, by the waveforms themselves, within two envelope steps (for waveform codecs)
    near = range(coarse - 2 * hop, coarse + 2 * hop + 1)
    shifts = {lag: _shifted(degraded, lag, len(reference)) for lag in near}
    best = max(shifts, key=lambda lag: float(np.dot(shifts[lag], reference)))
    return shifts[best]


def _shifted(degraded: np.ndarray, lag: int, length: int) -> np.ndarray:
    """`degraded` advanced by `lag` samples (delayed when negative), cut or zero-padded to `length`."""
    shifted = degraded[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, degraded.dtype), degraded])
    out = np.zeros(length, degraded.dtype)
    out[: min(length, len(shifted))] = shifted[:length]
    return out


def score(reference: np.ndarray, degraded: np.ndarray) -> dict[str, float]:
    from pesq import PesqError, pesq
    from pystoi import stoi

    degraded = align(reference, degraded)
    ref_t, deg_t = torch.from_numpy(reference)[None, None], torch.from_numpy(degraded)[None, None]
    pesq_wb = pesq(RATE, reference, degraded, "wb", on_error=PesqError.RETURN_VALUES)
    return {
        "stoi": float(stoi(reference, degraded, RATE, extended=False)),
        "pesq_wb": float(pesq_wb) if pesq_wb > 0 else math.nan,  # negative: PESQ found no speech
        "si_snr": float(si_snr(deg_t.float(), ref_t.float())[0]),
        "log_mel": float(log_mel_distance(deg_t.float(), ref_t.float())[0]),
    }


# ---------------------------------------------------------------- codecs


def resample(audio: np.ndarray, source: int, target: int) -> np.ndarray:
    return AF.resample(torch.from_numpy(audio)[None], source, target)[0].numpy()


def to_int16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes()


def codec2(audio: np.ndarray, mode: int, tmp: Path) -> tuple[np.ndarray, float]:
    raw, bits, out = tmp / "in.raw", tmp / "c2.bit", tmp / "out.raw"
    raw.write_bytes(to_int16(resample(audio, RATE, 8000)))
    subprocess.run(["c2enc", str(mode), raw, bits], check=True, capture_output=True)
    subprocess.run(["c2dec", str(mode), bits, out], check=True, capture_output=True)
    decoded = np.frombuffer(out.read_bytes(), "<i2").astype(np.float32) / 32768
    return resample(decoded, 8000, RATE), bits.stat().st_size * 8 / (len(audio) / RATE)


def pyav_codec(audio: np.ndarray, codec: str, rate: int, bit_rate: int) -> tuple[np.ndarray, float]:
    """Encode with PyAV's codec at `rate` and `bit_rate`, decode again; the bitrate is the packets' bytes."""
    signal = audio if rate == RATE else resample(audio, RATE, rate)
    encoder = av.CodecContext.create(codec, "w")
    encoder.sample_rate, encoder.bit_rate = rate, bit_rate
    encoder.layout, encoder.format = "mono", "s16"
    encoder.open()
    decoder = av.CodecContext.create(codec.removeprefix("lib").replace("opencore_", ""), "r")
    decoder.sample_rate, decoder.layout = rate, "mono"
    samples = (np.clip(signal, -1, 1) * 32767).round().astype(np.int16)
    frame_size = encoder.frame_size or 960
    padded = np.concatenate([samples, np.zeros(-len(samples) % frame_size + frame_size, np.int16)])
    payload, decoded, pts, out_rate = 0, [], 0, rate
    packets = []
    for start in range(0, len(padded), frame_size):
        frame = av.AudioFrame.from_ndarray(
            padded[None, start : start + frame_size], format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, pts
        pts += frame_size
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    for packet in packets:
        payload += packet.size
        for frame in decoder.decode(packet):  # the Opus decoder answers at 48 kHz whatever it was fed
            samples = frame.to_ndarray().reshape(-1)
            decoded.append(samples.astype(np.float32) / 32768 if samples.dtype == np.int16 else samples)
            out_rate = frame.sample_rate
    out = np.concatenate(decoded).astype(np.float32)
    out = out if out_rate == RATE else resample(out, out_rate, RATE)
    return out.astype(np.float32), payload * 8 / (len(audio) / RATE)


def toolkit(tokenizer: Tokenizer, clip: Path, tmp: Path) -> tuple[np.ndarray, float]:
    codes_path, wav = tmp / "clip.codes", tmp / "clip.wav"
    tokenizer.tokenize(clip, codes_path)
    tokenizer.decode_file(codes_path, wav)
    _, meta = read_codes(codes_path)
    frames = meta.latent_grid[0]
    bits = frames * sum(math.log2(size) for size in meta.codebook_sizes)
    seconds = meta.original_shape[0] / meta.media["sample_rate"]
    return read_audio(wav, RATE)[0][0].numpy(), bits / seconds


# ---------------------------------------------------------------- the benchmark


def codecs(models: dict[str, Tokenizer], peers: bool = True):
    """(name, nominal kbps, function(audio, clip, tmp) -> (decoded, bits per second)); the classic codecs
    after the models unless `peers` is false."""
    for name, tokenizer in models.items():
        yield name, None, lambda audio, clip, tmp, t=tokenizer: toolkit(t, clip, tmp)
    if not peers:
        return
    if shutil.which("c2enc"):
        for mode in CODEC2_MODES:
            yield f"codec2 {mode}", mode / 1000, lambda audio, clip, tmp, m=mode: codec2(audio, m, tmp)
    else:
        print("codec2 not installed (apt-get install codec2): left out", file=sys.stderr)
    for kbps in OPUS_KBPS:
        yield (
            f"opus {kbps} kbps",
            kbps,
            lambda audio, clip, tmp, k=kbps: pyav_codec(audio, "libopus", RATE, k * 1000),
        )
    yield "amr-nb 4.75", 4.75, lambda audio, clip, tmp: pyav_codec(audio, "libopencore_amrnb", 8000, 4750)


def run(
    models: dict[str, Tokenizer], clips: list[Path], peers: bool = True, quiet: bool = False
) -> list[dict]:
    """One row of mean scores per model (and per classic codec unless `peers` is false)."""
    rows = []
    references = {clip: read_audio(clip, RATE)[0][0].numpy() for clip in clips}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for name, _, code in codecs(models, peers):
            per_clip, rates, started = [], [], time.perf_counter()
            for clip in clips:
                decoded, bit_rate = code(references[clip], clip, tmp)
                per_clip.append(score(references[clip], decoded))
                rates.append(bit_rate)
            row = {"codec": name, "kbps": float(np.mean(rates)) / 1000, "clips": len(clips)}
            for key in per_clip[0]:
                row[key] = float(np.nanmean([c[key] for c in per_clip]))
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            if not quiet:
                print(format_row(row), file=sys.stderr)
    return rows


def format_row(row: dict) -> str:
    return (f"| {row['codec']} | {row['kbps']:.2f} | {row['stoi']:.3f} | {row['pesq_wb']:.2f} | "
            f"{row['si_snr']:.1f} | {row['log_mel']:.2f} |")  # fmt: skip


def summary(rows: list[dict], models: list[str]) -> str:
    lines = []
    for model in models:
        ours = next(r for r in rows if r["codec"] == model)
        peers = [r for r in rows if r["codec"] not in models and r["kbps"] >= ours["kbps"] - 1e-6]
        peer = min(peers, key=lambda r: r["kbps"]) if peers else None
        against = (f"; {peer['codec']} at {peer['kbps']:.2f} kbps: STOI {peer['stoi']:.3f}, "
                   f"PESQ-WB {peer['pesq_wb']:.2f}") if peer else ""  # fmt: skip
        lines.append(f"speech codec {model}: {ours['kbps']:.2f} kbps STOI {ours['stoi']:.3f} PESQ-WB "
                     f"{ours['pesq_wb']:.2f}{against} ({ours['clips']} held-out clips)")  # fmt: skip
    return "\n".join(lines)


def learning_curve(run_dir: Path, clips: list[Path]) -> list[dict]:
    """Every snapshot of a run scored on the clips, with the wall-clock hours since the run began."""
    base = Tokenizer.load(run_dir, "cpu")
    points = []
    for snapshot in sorted((run_dir / "snapshots").glob("model_*.safetensors")):
        load_weights(base.model, snapshot, run_dir / "config.yaml")
        base.model_hash = file_hash(snapshot)
        [scores] = run({"snapshot": base}, clips, peers=False, quiet=True)
        seconds = read_metadata(snapshot).get("train_seconds")  # wall time of the run when it was saved
        hours = float(seconds) / 3600 if seconds else math.nan
        row = {"step": int(snapshot.stem.split("_")[1]), "hours": hours}
        row |= {key: value for key, value in scores.items() if key not in ("codec", "clips", "seconds")}
        points.append(row)
        print(
            f"| {row['step']} | {row['hours']:.2f} | {row['stoi']:.3f} | {row['pesq_wb']:.2f} |",
            file=sys.stderr,
        )
    return points


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", help="a run directory or a shipped model name (repeatable)"
    )
    parser.add_argument("--clips", type=Path, help="a folder of held-out speech (sub-folders = speakers)")
    parser.add_argument("--per-speaker", type=int, default=0, help="clips per speaker (default 6; 2 quick)")
    parser.add_argument("--curve", type=Path, metavar="RUN", help="score every snapshot of RUN instead")
    parser.add_argument("--quick", action="store_true", help="2 clips per speaker")
    parser.add_argument("--json", type=Path, help="write the full results here")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    folder = args.clips or (CORPUS_TEST if CORPUS_TEST.is_dir() else SHIPPED_HELD_OUT)
    clips = held_out_clips(folder, args.per_speaker or (2 if args.quick else 6))
    seconds = sum(av_seconds(c) for c in clips)
    print(f"{len(clips)} held-out clips from {folder}, {seconds:.0f} s; torch threads "
          f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}", file=sys.stderr)  # fmt: skip
    if args.curve:
        points = learning_curve(args.curve, clips)
        result = {"curve": points}
        last = points[-1]
        print(f"learning curve of {args.curve}: {len(points)} snapshots, last (step {last['step']}, "
              f"{last['hours']:.2f} h) STOI {last['stoi']:.3f} PESQ-WB {last['pesq_wb']:.2f}")  # fmt: skip
    else:
        names = args.model or ["speech"]
        models = {name: Tokenizer.load(name, "cpu") for name in names}
        print(TABLE_HEAD, file=sys.stderr)
        rows = run(models, clips)
        result = {"rows": rows}
        print(summary(rows, names))
    result["machine"] = {"torch_threads": torch.get_num_threads(), "load": os.getloadavg(),
                         "clips": [str(c) for c in clips]}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
