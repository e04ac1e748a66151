"""Every registered bottleneck with every modality, chosen through recipe overrides alone."""

import json

import pytest
from conftest import ROOT, TINY, vqt
from vqt_image.dataset import image_dataset
from vqt_image.io import write_image

from vqtoolkit.plugins import registry

BOTTLENECKS = {
    "vq": ["bottleneck.codebook_size=16"],
    "rvq": ["bottleneck.num_quantizers=2", "bottleneck.codebook_size=16", "bottleneck.quantizer_dropout=0.5"],
    "fsq": ["bottleneck.levels=[5,3]"],
    "rfsq": ["bottleneck.levels=[5,3]", "bottleneck.num_quantizers=2", "bottleneck.quantizer_dropout=0.5"],
    "lfq": ["bottleneck.bits=4"],
    "gaussian": [],
    "none": [],
}
SAMPLES = {
    "speech": ROOT / "plugins/vqt_speech/data/asterisk_small/dir-instr.g722",
    "video": ROOT / "plugins/vqt_video/data/bigbuckbunny/bigbuckbunny_64.mp4",
}


def test_the_matrix_covers_every_registered_bottleneck_and_modality():
    assert set(BOTTLENECKS) == set(registry("bottlenecks").names())
    assert set(TINY) == set(registry("modalities").names())


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
@pytest.mark.parametrize("modality", ["image", "speech", "video"])
def test_bottleneck_with_modality(modality, bottleneck, tmp_path):
    recipe, tiny = TINY[modality]
    run_dir = tmp_path / "run"
    overrides = [*tiny, "train.max_steps=3", f"train.out_dir={run_dir}", f"bottleneck.name={bottleneck}"]
    result = vqt("train", ROOT / "recipes" / f"{recipe}.yaml", *overrides, *BOTTLENECKS[bottleneck])
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)
    assert final["step"] == 3 and final["recon_loss"] > 0
    if bottleneck == "gaussian":
        assert final["elbo"] < 0  # ELBO = -(reconstruction + KL) per example, reported for every modality
    discrete = bottleneck not in ("gaussian", "none")
    assert ("codebook_used_fraction" in final) == discrete

    if modality == "image":
        sample = tmp_path / "in.png"
        write_image(sample, image_dataset("", "test", 1)[0])
    else:
        sample = SAMPLES[modality]
    codes, out = tmp_path / "x.codes", tmp_path / f"out{sample.suffix if modality != 'speech' else '.wav'}"
    tokenized = vqt("tokenize", sample, "--model", run_dir, "-o", codes)
    if not discrete:
        assert tokenized.returncode == 1 and "continuous and has no codes" in tokenized.stderr
        return
    assert tokenized.returncode == 0, tokenized.stderr
    decoded = vqt("decode", codes, "--model", run_dir, "-o", out)
    assert decoded.returncode == 0, decoded.stderr
    assert out.stat().st_size > 0
