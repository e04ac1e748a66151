"""Streaming keeps memory flat: tokenizing a 720p video six times as long takes no more peak memory.
Training keeps freed memory for the next step.

The full-size check (10 minutes of real 720p, 1 hour of speech) is `benchmarks/memory.py`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
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


FAULTS_OVER_TWENTY_STEPS = """
import resource, torch
from vqtoolkit.memory import keep_freed_memory
from vqtoolkit.nn.quantize import VectorQuantizer
kept = keep_freed_memory()
torch.manual_seed(0)
quantizer = VectorQuantizer(64, 512, 0.25, ema=True, kmeans_init=False, dead_code_steps=0).train()
latents = torch.randn(32, 64, 32, 32)  # 8 MB, as are the step's code vectors, residual and gradient
def step():
    out = quantizer(latents.clone().requires_grad_())
    (out.z.square().mean() + out.loss).backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_keeps_freed_memory_for_the_next_step():
    """What `vqt train` sets: twenty quantizer training steps after three reuse the memory the steps before
    them freed; with VQT_SYSTEM_MALLOC=1, glibc hands some of it back and the steps fault its 4 KiB pages
    in again. Fresh processes, as the setting holds for the whole process."""
    half_a_tensor_per_step = 20 * 4 * 2**20 // 4096
    counts = {}
    for name, env in {"kept": {}, "system": {"VQT_SYSTEM_MALLOC": "1"}}.items():
        done = subprocess.run(
            [sys.executable, "-c", FAULTS_OVER_TWENTY_STEPS],
            capture_output=True, text=True, env={**os.environ, **env}, check=True,
        )  # fmt: skip
        kept, faults = done.stdout.split()
        counts[name] = (kept, int(faults))
    assert counts["kept"][0] == "True" and counts["system"][0] == "False", counts
    assert counts["kept"][1] < half_a_tensor_per_step, counts
    assert 3 * counts["kept"][1] < counts["system"][1], counts
