"""Streaming keeps memory flat: tokenizing a 720p video six times as long takes no more peak memory.

The full-size check (10 minutes of real 720p, 1 hour of speech) is `benchmarks/memory.py`."""

from __future__ import annotations

import sys

from conftest import ROOT
from test_video_io import encode, pattern

sys.path.insert(0, str(ROOT / "benchmarks"))
from memory import looped_video, peak_rss  # noqa: E402

LIMIT_MB = 1024


def test_tokenizing_a_long_720p_video_keeps_peak_memory_flat(tiny_video_run, tmp_path):
    clip = encode(tmp_path / "clip.mp4", "libx264", pattern(25, 720, 1280), 25, {"preset": "ultrafast"})
    peaks = {}
    for seconds in (10, 60):
        video = tmp_path / f"{seconds}s.mp4"
        assert looped_video(clip, video, seconds) == seconds
        codes = tmp_path / f"{seconds}s.codes"
        peaks[seconds], _ = peak_rss("tokenize", str(video), "--model", str(tiny_video_run), "-o", str(codes))
        assert codes.stat().st_size > 0
    assert max(peaks.values()) < LIMIT_MB, peaks
    assert peaks[60] < peaks[10] + 100, f"peak memory grew with the length: {peaks}"
