"""Peak memory of streaming `vqt tokenize` and `vqt decode` on a long speech file (or video file).

    python benchmarks/memory.py --model runs/speech_vqvae              # a 1-hour file
    python benchmarks/memory.py --model runs/speech_vqvae --minutes 5 --json memory.json
    python benchmarks/memory.py --model runs/video_vqvae --video --minutes 10

The file is real speech (the shipped Asterisk prompts, repeated) written as FLAC; each command runs in
its own process and its peak resident set size comes from the kernel (wait4's ru_maxrss). The peer is
the same command on a file 1/12 as long: streaming means the peak should not grow with the length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vqt_speech.dataset import audio_files
from vqt_speech.io import AudioWriter, read_audio
from vqt_video.io import VideoWriter, read_video

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "plugins" / "vqt_speech" / "data" / "asterisk_small"
VIDEO = ROOT / "plugins" / "vqt_video" / "data" / "bigbuckbunny" / "bigbuckbunny_128.mp4"


def long_speech(path: Path, seconds: float) -> float:
    prompts = [read_audio(p)[0] for p in audio_files(SHIPPED)]
    written = 0
    with AudioWriter(path, 16000) as writer:
        while written < seconds * 16000:
            for audio in prompts:
                audio = audio[:, : int(seconds * 16000) - written]
                writer.write(audio)
                written += audio.shape[1]
    return written / 16000


def long_video(path: Path, seconds: float) -> float:
    """The shipped 128x128 clip, played forwards and backwards until `seconds` long, as h264."""
    clip, meta = read_video(VIDEO)
    frames, written = int(seconds * meta["fps"]), 0
    with VideoWriter(path, meta["fps"], *clip.shape[-2:]) as writer:
        while written < frames:
            piece = clip[:, : frames - written]
            writer.write(piece)
            written += piece.shape[1]
            clip = clip.flip(1)
    return written / meta["fps"]


def peak_rss(*args: str) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of one `vqt` command in a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vqtoolkit", *args], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    error = process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vqt {' '.join(args)} failed:\n{error}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def measure(model: str, seconds: float, work: Path, video: bool = False) -> dict:
    media = work / (f"video_{int(seconds)}s.mp4" if video else f"speech_{int(seconds)}s.flac")
    duration = long_video(media, seconds) if video else long_speech(media, seconds)
    codes, recon = work / "media.codes", work / ("recon.mp4" if video else "recon.flac")
    tokenize_mb, tokenize_s = peak_rss("tokenize", str(media), "--model", model, "-o", str(codes))
    decode_mb, decode_s = peak_rss("decode", str(codes), "--model", model, "-o", str(recon))
    return {
        "media_seconds": duration,
        "tokenize_peak_mb": tokenize_mb,
        "tokenize_seconds": tokenize_s,
        "decode_peak_mb": decode_mb,
        "decode_seconds": decode_s,
        "decoded_samples": read_audio(recon)[1]["length"] if seconds <= 600 and not video else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained speech run directory")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long file")
    parser.add_argument("--video", action="store_true", help="a long video instead (give a video run)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vqt-memory-") as tmp:
        long = measure(args.model, args.minutes * 60, Path(tmp), args.video)
        short = measure(args.model, args.minutes * 5, Path(tmp), args.video)
    kind = "video" if args.video else "speech"
    print(f"{'':22}{'long':>12}{'1/12 as long':>14}")
    for key in ("media_seconds", "tokenize_peak_mb", "tokenize_seconds", "decode_peak_mb", "decode_seconds"):
        print(f"{key:22}{long[key]:12.1f}{short[key]:14.1f}")
    print(
        f"streaming memory: tokenize peak {long['tokenize_peak_mb']:.0f} MB, decode peak "
        f"{long['decode_peak_mb']:.0f} MB for {long['media_seconds'] / 60:.0f} min of {kind} "
        f"({short['tokenize_peak_mb']:.0f} / {short['decode_peak_mb']:.0f} MB at 1/12 the length)"
    )
    if args.json:
        args.json.write_text(json.dumps({"long": long, "short": short}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
