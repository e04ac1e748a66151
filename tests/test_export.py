"""`vqt export`: the exported encoder and decoder give the toolkit's codes and reconstructions."""

import json

import torch
from conftest import ROOT, run_vqt, vqt
from test_adversarial import TINY_CODEC
from vqt_image.dataset import image_dataset
from vqt_speech.io import read_audio

from vqtoolkit.inference.stream import pad_to_multiple
from vqtoolkit.inference.tokenizer import Tokenizer


def load_exported(out, name):
    """The toolkit never loads exports; a deployment would, like this."""
    described = json.loads((out / "export.json").read_text())[name]
    if described["method"] == "torch.export":
        return torch.export.load(out / described["path"]).module()
    return torch.jit.load(out / described["path"])


def check_against_the_toolkit(tokenizer, out, media):
    """media (B, C, *grid), padded as the toolkit pads it: same codes, same reconstructions."""
    model, low_high = tokenizer.model, tokenizer.modality.value_range
    encoder, decoder = load_exported(out, "encoder"), load_exported(out, "decoder")
    padded = pad_to_multiple(media, model.downsample)
    with torch.no_grad():
        codes = encoder(padded)
        assert torch.equal(codes, model.encode(padded))
        expected = model.decode(codes).clamp(*low_high)
        assert torch.allclose(decoder(codes), expected, atol=1e-5, rtol=1e-5)
    return codes


def test_image_model_exports_with_dynamic_shapes(tiny_image_run, tmp_path):
    result = vqt("export", tiny_image_run, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "encoder: encoder.pt2 (torch.export, dynamic batch and grid axes)" in result.stdout
    assert "decoder: decoder.pt2 (torch.export, dynamic batch and grid axes)" in result.stdout
    tokenizer = Tokenizer.load(tiny_image_run, "cpu")
    images = torch.stack([image_dataset("", "test", 1)[i] for i in range(5)])  # real 28x28 pictures
    codes = check_against_the_toolkit(tokenizer, tmp_path, images)
    assert codes.shape == (5, 7, 7)
    # another batch size and an odd picture size (padded to 32x28): the same programs
    resized = torch.nn.functional.interpolate(images[:3], size=(30, 26), mode="bilinear")
    assert check_against_the_toolkit(tokenizer, tmp_path, resized).shape == (3, 8, 7)
    # the file path through the toolkit gives the same codes as the exported encoder
    from vqt_image.io import write_image

    write_image(tmp_path / "shirt.png", resized[0])
    file_codes, _ = tokenizer.encode_file(tmp_path / "shirt.png")
    exported = load_exported(tmp_path, "encoder")(pad_to_multiple(resized[:1], (4, 4)))
    assert torch.equal(file_codes, exported[0])


def test_speech_model_exports(tiny_speech_run, tmp_path):
    result = vqt("export", tiny_speech_run, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    described = json.loads((tmp_path / "export.json").read_text())
    assert described["modality"] == "speech" and described["downsampling"] == [64]
    tokenizer = Tokenizer.load(tiny_speech_run, "cpu")
    audio, _ = read_audio(ROOT / "plugins/vqt_speech/data/asterisk_small/dir-instr.g722")
    clips = torch.stack([audio[:, :20000], audio[:, 40000:60000]])  # real speech, not a multiple of 64
    codes = check_against_the_toolkit(tokenizer, tmp_path, clips)
    assert codes.shape == (2, 313)


def test_factorized_residual_codec_exports(tmp_path):
    """Factorized, l2-normalised residual codes (the speech codec's): the exported encoder searches each
    quantizer's own projected lookup space, so its codes are the toolkit's."""
    run_dir = tmp_path / "codec"
    result = run_vqt(
        "train", "recipes/speech_vqvae.yaml", *TINY_CODEC, "train.max_steps=3", "adversarial.start_step=10",
        f"train.out_dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = vqt("export", run_dir, "-o", tmp_path / "export")
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.load(run_dir, "cpu")
    assert tokenizer.model.bottleneck.layers[0].project_in is not None
    audio, _ = read_audio(ROOT / "plugins/vqt_speech/data/asterisk_small/dir-instr.g722")
    # the Vocos decoder exports at its example shape (two clips of 10 code frames), the encoder for any
    clips = torch.stack([audio[:, 8000:11200], audio[:, 30000:33200]])
    codes = check_against_the_toolkit(tokenizer, tmp_path / "export", clips)
    assert codes.shape == (2, 4, 10) and len(codes.unique()) > 1
    longer = pad_to_multiple(audio[None, :, :20000], tokenizer.model.downsample)
    encoder = load_exported(tmp_path / "export", "encoder")
    with torch.no_grad():
        assert torch.equal(encoder(longer), tokenizer.model.encode(longer))
