"""Video end to end: the recipe through the CLI, streaming tokenize/decode, the audio track."""

from fractions import Fraction

import pytest
from conftest import ROOT, vqt
from safetensors import safe_open
from test_video_io import NTSC, audio_only, encode, pattern
from vqt_video.io import read_video, video_info

SHIPPED = ROOT / "plugins/vqt_video/data/bigbuckbunny/bigbuckbunny_64.mp4"


def round_trip(run_dir, source, tmp_path, *extra):
    codes, out = tmp_path / "v.codes", tmp_path / "v.mp4"
    tokenized = vqt("tokenize", source, "--model", run_dir, "-o", codes, *extra)
    assert tokenized.returncode == 0, tokenized.stderr
    decoded = vqt("decode", codes, "--model", run_dir, "-o", out, *extra)
    assert decoded.returncode == 0, decoded.stderr
    return codes, out, tokenized.stderr + decoded.stderr


def test_tiny_video_recipe_trains(tiny_video_run):
    assert (tiny_video_run / "model.safetensors").is_file() and (tiny_video_run / "metrics.jsonl").is_file()


@pytest.mark.parametrize("frames, height, width", [(13, 30, 46), (1, 24, 32)])
def test_decode_restores_fps_frame_count_and_size(tiny_video_run, tmp_path, frames, height, width):
    source = encode(tmp_path / "in.mp4", "libx264", pattern(frames, height, width), NTSC, {"crf": "18"})
    codes, out, _ = round_trip(tiny_video_run, source, tmp_path)
    with safe_open(str(codes), "pt") as f:
        assert f.get_tensor("codes").shape == (-(-frames // 4), 4, 4)  # the model works at data.size 16x16
    info = video_info(out)
    assert (info["height"], info["width"]) == (height, width)
    assert Fraction(info["fps"]).limit_denominator(100000) == NTSC
    video, _ = read_video(out)
    assert video.shape == (3, frames, height, width)


def test_audio_track_goes_into_the_codes_and_back(tiny_video_run, tiny_speech_run, tmp_path):
    codes, out, messages = round_trip(tiny_video_run, SHIPPED, tmp_path, "--audio-model", tiny_speech_run)
    with safe_open(str(codes), "pt") as f:
        assert set(f.keys()) == {"codes", "audio_codes"}
    info = video_info(out)
    assert info["has_audio"] and info["frames"] == 132 and info["fps"] == 25.0
    assert "note:" not in messages


def test_video_without_audio_given_an_audio_model(tiny_video_run, tiny_speech_run, tmp_path):
    source = encode(tmp_path / "silent.mp4", "libx264", pattern(8, 16, 16), 25)
    codes, out, messages = round_trip(tiny_video_run, source, tmp_path, "--audio-model", tiny_speech_run)
    assert "audio codes skipped (no audio stream)" in messages
    with safe_open(str(codes), "pt") as f:
        assert set(f.keys()) == {"codes"}
    assert not video_info(out)["has_audio"]


def test_audio_only_file_given_to_a_video_model_is_a_clear_error(tiny_video_run, tmp_path):
    source = audio_only(tmp_path / "speech.mp4", "aac", "fltp")
    result = vqt("tokenize", source, "--model", tiny_video_run, "-o", tmp_path / "x.codes")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {source}: no video stream"
    assert not (tmp_path / "x.codes").exists()
