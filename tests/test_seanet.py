"""The SEANet encoder/decoder and the Vocos decoder: shapes, causality, and the registered names."""

from __future__ import annotations

import pytest
import torch

from vqtoolkit.plugins import registry


def build(kind: str, name: str, **options):
    return registry(kind).get(name)(1, 8, **options)


@pytest.mark.parametrize("activation", ["elu", "snake"])
@pytest.mark.parametrize("causal", [False, True])
def test_seanet_round_trip_keeps_the_length(activation, causal):
    options = dict(strides=[2, 4, 5], hidden=4, max_channels=16, dilations=[1, 3], activation=activation,
                   causal=causal)  # fmt: skip
    encoder, decoder = build("encoders", "seanet", **options), build("decoders", "seanet", **options)
    assert encoder.downsample == decoder.downsample == (40,)
    audio = torch.randn(2, 1, 40 * 7)
    latents = encoder(audio)
    assert latents.shape == (2, 8, 7)
    assert decoder(latents).shape == audio.shape


def first_dependent_input(module, length: int, output_index: int) -> int:
    """The index of the latest input sample that the output at `output_index` depends on."""
    x = torch.randn(1, 1, length, requires_grad=True)
    module(x)[0, :, output_index].sum().backward()
    return int(x.grad[0, 0].nonzero().max())


def test_causal_encoder_sees_only_the_past():
    causal = build(
        "encoders", "seanet", strides=[2, 4], hidden=4, max_channels=8, dilations=[1, 3], causal=True
    )
    centred = build("encoders", "seanet", strides=[2, 4], hidden=4, max_channels=8, dilations=[1, 3])
    frame = 10  # covers input samples 80-87
    assert first_dependent_input(causal, 8 * 32, frame) <= 8 * frame + 7
    assert first_dependent_input(centred, 8 * 32, frame) > 8 * frame + 7  # looks ahead


def test_vocos_decoder_gives_hop_samples_per_frame_and_learns_from_the_waveform():
    decoder = build("decoders", "vocos", hop=40, n_fft=160, dim=16, layers=2)
    assert decoder.downsample == (40,)
    latents = torch.randn(2, 8, 9, requires_grad=True)
    audio = decoder(latents)
    assert audio.shape == (2, 1, 9 * 40) and torch.isfinite(audio).all()
    audio.square().mean().backward()
    assert latents.grad.abs().sum() > 0 and decoder.head.weight.grad.abs().sum() > 0


def test_vocos_subframes_are_stft_frames_in_time_order():
    decoder = build("decoders", "vocos", hop=40, n_fft=80, subframes=2, dim=16, layers=1)
    head = {}
    decoder.head.register_forward_hook(lambda module, args, out: head.update(out=out.detach()))
    audio = decoder(torch.randn(1, 8, 6))
    assert audio.shape == (1, 1, 6 * 40) and decoder.head.out_features == 2 * 82
    # code frame t's two subframes are STFT frames 2t and 2t+1, hop 20: the synthesis by hand agrees
    frames = head["out"][0].reshape(6, 2, 2, 41)  # (code frame, subframe, magnitude|phase, bin)
    spectrum = torch.polar(frames[:, :, 0].clamp(max=6).exp(), frames[:, :, 1]).reshape(12, 41).T
    by_hand = torch.istft(spectrum, 80, 20, window=torch.hann_window(80), center=True, length=240)
    assert torch.allclose(audio[0, 0], by_hand, atol=1e-5)
    with pytest.raises(ValueError, match="divisor"):
        build("decoders", "vocos", hop=40, n_fft=80, subframes=3)


def test_vocos_decoder_writes_mono_only():
    with pytest.raises(ValueError, match="mono"):
        registry("decoders").get("vocos")(2, 8)


def test_vocos_encoder_reads_stft_frames_of_each_code_frame():
    encoder = build("encoders", "vocos", hop=40, n_fft=80, subframes=2, dim=16, layers=2)
    assert encoder.downsample == (40,)
    audio = torch.randn(2, 1, 40 * 9, requires_grad=True)
    latents = encoder(audio)
    assert latents.shape == (2, 8, 9) and torch.isfinite(latents).all()
    latents.square().mean().backward()
    assert audio.grad.abs().sum() > 0 and encoder.embed.weight.grad.abs().sum() > 0
    # code frame 4, subframe 1 is STFT frame 9: centred on sample 9 * 20 + 10, window of 80
    features = encoder.features(audio.detach())
    assert features.shape == (2, 2 * 41, 9)
    window = audio.detach()[0, 0, 9 * 20 + 10 - 40 : 9 * 20 + 10 + 40] * torch.hann_window(80)
    by_hand = (torch.fft.rfft(window).abs() + 1e-5).log()
    assert torch.allclose(features[0, 41:, 4], by_hand, atol=1e-4)
    with pytest.raises(ValueError, match="divisible"):
        encoder(torch.randn(1, 1, 50))


def test_causal_vocos_encoder_sees_only_the_past():
    options = dict(hop=40, n_fft=80, subframes=2, dim=8, layers=2)
    causal = build("encoders", "vocos", causal=True, **options)
    centred = build("encoders", "vocos", **options)
    frame = 5  # covers input samples 200-239
    assert first_dependent_input(causal, 40 * 12, frame) <= 40 * frame + 39
    assert first_dependent_input(centred, 40 * 12, frame) > 40 * frame + 39
