"""The speech codec benchmark's scoring: alignment recovers a codec's delay, bitrates are real."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import ROOT
from vqt_speech.io import read_audio

sys.path.insert(0, str(ROOT / "benchmarks"))
speech_codecs = pytest.importorskip("speech_codecs")

CLIP = ROOT / "plugins" / "vqt_speech" / "data" / "heldout" / "asterisk-fr" / "agent-alreadyon.g722"


@pytest.mark.parametrize("delay", [0, 123, -57, 1601])
def test_alignment_undoes_a_delay_to_the_sample(delay):
    reference = read_audio(CLIP)[0][0].numpy()
    delayed = speech_codecs._shifted(reference, -delay, len(reference) + 2000)  # delay > 0: output late
    aligned = speech_codecs.align(reference, delayed)
    assert aligned.shape == reference.shape
    inside = slice(2000, len(reference) - 2000)
    np.testing.assert_array_equal(aligned[inside], reference[inside])


def test_opus_bitrate_is_what_its_packets_spend():
    reference = read_audio(CLIP)[0][0].numpy()
    decoded, bits_per_second = speech_codecs.pyav_codec(reference, "libopus", 16000, 8000)
    assert 7000 < bits_per_second < 9000
    assert speech_codecs.score(reference, decoded)["stoi"] > 0.9
