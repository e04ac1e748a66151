"""Variable bitrate from one residual model: `vqt tokenize --codebooks N` and its decoding."""

import pytest
from conftest import ROOT, TINY, vqt
from vqt_speech.io import read_audio

from vqtoolkit.inference.codes import read_codes

CLIP = ROOT / "plugins/vqt_speech/data/asterisk_small/dir-instr.g722"


@pytest.fixture(scope="module")
def residual_speech_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("rvq") / "run"
    recipe, tiny = TINY["speech"]
    residual = ["bottleneck.name=rvq", "bottleneck.num_quantizers=3", "bottleneck.codebook_size=16"]
    residual += ["bottleneck.quantizer_dropout=0.5", "train.max_steps=10", f"train.out_dir={run}"]
    result = vqt("train", ROOT / "recipes" / f"{recipe}.yaml", *tiny, *residual)
    assert result.returncode == 0, result.stderr
    return run


def test_first_codebooks_are_a_prefix_of_the_full_codes_and_decode(residual_speech_run, tmp_path):
    full_codes, full_meta = None, None
    decoded = {}
    for count in (3, 2, 1):
        codes_path, wav = tmp_path / f"{count}.codes", tmp_path / f"{count}.wav"
        result = vqt("tokenize", CLIP, "--model", residual_speech_run, "--codebooks", count, "-o", codes_path)
        assert result.returncode == 0, result.stderr
        codes, meta = read_codes(codes_path)
        assert meta.codebook_sizes == [16] * count
        if count == 3:
            full_codes, full_meta = codes, meta
        else:  # the same codes, fewer levels; one level is stored as a plain grid
            assert codes.tolist() == (full_codes[:count] if count > 1 else full_codes[0]).tolist()
        result = vqt("decode", codes_path, "--model", residual_speech_run, "-o", wav)
        assert result.returncode == 0, result.stderr
        decoded[count], audio_meta = read_audio(wav)
        assert decoded[count].shape[1] == full_meta.original_shape[0] and audio_meta["source_rate"] == 16000
    assert not decoded[1].equal(decoded[2]) and not decoded[2].equal(decoded[3])


def test_codebooks_beyond_the_model_or_on_a_whole_code_model_are_one_line(
    residual_speech_run, tiny_speech_run, tmp_path
):
    too_many = vqt(
        "tokenize", CLIP, "--model", residual_speech_run, "--codebooks", 4, "-o", tmp_path / "a.codes"
    )
    assert (
        too_many.returncode == 1
        and "--codebooks 4:" in too_many.stderr
        and "has 3 codebooks" in too_many.stderr
    )
    whole = vqt("tokenize", CLIP, "--model", tiny_speech_run, "--codebooks", 2, "-o", tmp_path / "b.codes")
    assert whole.returncode == 1 and "not a residual model" in whole.stderr
    assert not (tmp_path / "a.codes").exists() and not (tmp_path / "b.codes").exists()
