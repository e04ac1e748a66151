"""Speech end to end: the recipe through the CLI, streaming tokenize/decode of real speech."""

import json
from pathlib import Path

import torch
from conftest import vqt
from vqt_speech.dataset import audio_files
from vqt_speech.io import read_audio, write_audio
from vqt_speech.losses import si_snr

from vqtoolkit.inference.codes import read_codes
from vqtoolkit.inference.tokenizer import Tokenizer

SHIPPED = Path(__file__).resolve().parent.parent / "plugins/vqt_speech/data/asterisk_small"


def real_speech(path: Path, seconds: float, sample_rate: int = 16000) -> Path:
    """Shipped voice prompts joined into one clip of the given length."""
    pieces, total = [], 0
    for file in audio_files(SHIPPED):
        audio, _ = read_audio(file, sample_rate)
        pieces.append(audio)
        total += audio.shape[1]
        if total >= seconds * sample_rate:
            break
    write_audio(path, torch.cat(pieces, 1)[:, : int(seconds * sample_rate)], sample_rate=sample_rate)
    return path


def test_tiny_speech_recipe_trains_and_its_loss_falls(tiny_speech_run):
    records = [json.loads(line) for line in (tiny_speech_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 30
    assert sum(losses[-10:]) / 10 < 0.95 * sum(losses[:5]) / 5
    final = next(r for r in records if r["split"] == "eval")
    assert {"si_snr", "log_mel_distance", "codebook_used_fraction", "codebook_perplexity"} <= set(final)


def test_chunked_codes_match_whole_file_codes_on_60_seconds(tiny_speech_run, tmp_path):
    clip = real_speech(tmp_path / "minute.wav", 60)
    tokenizer = Tokenizer.load(tiny_speech_run, "cpu")
    whole, _ = tokenizer.encode_file(clip, chunk=64 * 16384)  # one chunk holds the whole minute
    chunked, meta = tokenizer.encode_file(clip, chunk=64 * 40)  # 0.16 s chunks: hundreds of seams
    assert whole.shape == chunked.shape == (60 * 16000 // 64,)
    identical = (whole == chunked).float().mean().item()
    assert identical >= 0.99, identical
    assert meta.chunking["context"] >= 64  # the encoder's receptive field reaches past one code


def test_chunked_latents_equal_whole_file_latents_at_every_seam(tiny_speech_run, tmp_path):
    """Stricter than the codes: the encoder's continuous output, chunk by chunk with its context on both
    sides, equals one pass over the whole clip up to float rounding, at every position."""
    from vqt_speech.io import stream_audio

    from vqtoolkit.inference.stream import encode_stream

    clip = real_speech(tmp_path / "clip.wav", 20)
    tokenizer = Tokenizer.load(tiny_speech_run, "cpu")
    encoder, context = tokenizer.model.encoder, tokenizer.context[0]
    with torch.no_grad():
        whole = encoder(read_audio(clip)[0][None])[0]
        chunked, _ = encode_stream(encoder, stream_audio(clip, chunk=64 * 25), 64, 64 * 25, context, "cpu")
    assert chunked.shape == whole.shape
    assert torch.allclose(chunked, whole, atol=1e-5), (chunked - whole).abs().max()


def test_chunked_decoding_has_no_seams_and_restores_the_exact_length(tiny_speech_run, tmp_path):
    clip = real_speech(tmp_path / "clip.wav", 7.3337)
    tokenizer = Tokenizer.load(tiny_speech_run, "cpu")
    codes, meta = tokenizer.encode_file(clip)
    whole = torch.cat(list(tokenizer.decode_pieces(codes, meta, chunk=100_000)), 1)
    chunked = torch.cat(list(tokenizer.decode_pieces(codes, meta, chunk=7)), 1)
    assert whole.shape == chunked.shape == (1, round(7.3337 * 16000))
    assert si_snr(chunked[None], whole[None]).item() > 60  # dB: the pieces join without seams


def test_tokenize_decode_cli_round_trip_keeps_length_and_rate(tiny_speech_run, tmp_path):
    clip = tmp_path / "stereo44k.flac"
    mono, _ = read_audio(real_speech(tmp_path / "base.wav", 3.21), 44100)
    write_audio(clip, torch.cat([mono, 0.5 * mono]), sample_rate=44100)  # stereo 44.1 kHz FLAC
    assert vqt("tokenize", clip, "--model", tiny_speech_run, "-o", tmp_path / "c.codes").returncode == 0
    codes, meta = read_codes(tmp_path / "c.codes")
    assert meta.media["sample_rate"] == 16000 and meta.original_shape == [round(3.21 * 16000)]
    result = vqt("decode", tmp_path / "c.codes", "--model", tiny_speech_run, "-o", tmp_path / "r.wav")
    assert result.returncode == 0, result.stderr
    decoded, info = read_audio(tmp_path / "r.wav", 16000)
    assert info["source_rate"] == 16000 and decoded.shape == (1, round(3.21 * 16000))
    opus = vqt("decode", tmp_path / "c.codes", "--model", tiny_speech_run, "-o", tmp_path / "r.opus")
    assert opus.returncode == 0 and read_audio(tmp_path / "r.opus")[0].shape[1] > 3 * 16000


def test_image_file_given_to_speech_model_is_a_clear_error(tiny_speech_run, tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    result = vqt("tokenize", tmp_path / "a.png", "--model", tiny_speech_run, "-o", tmp_path / "a.codes")
    assert (
        result.returncode == 1
        and "the speech model" in result.stderr
        and "cannot read this file" in result.stderr
    )


def test_fine_mel_bands_see_a_pitch_error_that_coarse_bands_blur():
    import math

    from vqt_speech.losses import SpeechLoss

    t = torch.arange(16000) / 16000

    def voice(f0: float) -> torch.Tensor:  # harmonics of f0 up to 7 kHz, falling as 1/k
        harmonics = [torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 40) if k * f0 < 7000]
        return 0.1 * sum(harmonics)[None, None]

    sizes = dict(fft_sizes=[512, 1024, 2048], l1_weight=0.0)
    coarse, fine = SpeechLoss(**sizes), SpeechLoss(**sizes, mel_bands=[40, 80, 160])
    assert coarse.per_example(voice(200), voice(200)).item() == 0
    assert fine.per_example(voice(212), voice(200)) > 1.3 * coarse.per_example(voice(212), voice(200))


def test_mel_bands_of_the_wrong_length_are_one_line(tmp_path):
    shipped_data = ["data.path=", "data.eval_path=", f"train.out_dir={tmp_path}/r"]
    result = vqt("train", "recipes/speech_vqvae.yaml", "model.loss.mel_bands=[10,20]", *shipped_data)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "mel_bands: one positive number, or one per FFT size (" in result.stderr
