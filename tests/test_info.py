"""`vqt info`: run directories and codes files described, as text and as JSON."""

import json

from conftest import ROOT, vqt

from vqtoolkit.rundir import load_model

PROMPT = ROOT / "plugins/vqt_speech/data/asterisk_small/dir-instr.g722"  # 105,304 samples at 16 kHz


def test_run_directory(tiny_image_run):
    result = vqt("info", tiny_image_run, "--json")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    model, _ = load_model(tiny_image_run)
    assert described["kind"] == "VQ-VAE" and described["modality"] == "image"
    assert described["codebook_sizes"] == [32] and described["downsampling"] == [4, 4]
    assert described["bottleneck"]["name"] == "vq" and described["bottleneck"]["codebook_size"] == 32
    assert described["parameters"] == sum(p.numel() for p in model.parameters())
    assert described["steps_trained"] == 20
    assert described["fitted_to_run"] == {"decay": 0.8}  # the recipe's 0.99, as trained for 20 steps
    last_eval = [json.loads(line) for line in (tiny_image_run / "metrics.jsonl").read_text().splitlines()][-1]
    assert described["final_metrics"] == {k: v for k, v in last_eval.items() if k != "split"}
    model_size = (tiny_image_run / "model.safetensors").stat().st_size
    assert described["files"]["model.safetensors"] == model_size

    text = vqt("info", tiny_image_run).stdout
    assert "kind: VQ-VAE\n" in text and "codebook sizes: 32\n" in text and "downsampling: 4 x 4\n" in text
    assert f"parameters: {described['parameters']:,}\n" in text and "steps trained: 20\n" in text
    assert "  model.safetensors  " in text and "  psnr: " in text


def test_codes_file_and_whether_a_model_made_it(tiny_speech_run, tiny_image_run, tmp_path):
    codes = tmp_path / "prompt.codes"
    assert vqt("tokenize", PROMPT, "--model", tiny_speech_run, "-o", codes).returncode == 0
    result = vqt("info", codes, "--model", tiny_speech_run, "--json")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["modality"] == "speech" and described["grid"] == [1646]  # one code per 64 samples
    assert described["codebook_sizes"] == [32] and described["original_shape"] == [105304]
    assert described["duration_s"] == round(105304 / 16000, 3) and described["media"]["sample_rate"] == 16000
    assert described["model_matches"] is True and len(described["model_hash"]) == 16

    text = vqt("info", codes, "--model", tiny_speech_run).stdout
    assert "modality: speech\n" in text and "grid: 1646\n" in text and "model matches: yes\n" in text
    other = vqt("info", codes, "--model", tiny_image_run)
    assert other.returncode == 1 and "model matches: NO" in other.stdout


def test_mistakes_are_one_line(tmp_path, tiny_image_run):
    missing = vqt("info", tmp_path / "nothing")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no such run directory or codes file" in missing.stderr
    (tmp_path / "notes.txt").write_text("hello")
    not_codes = vqt("info", tmp_path / "notes.txt")
    assert (
        not_codes.returncode == 1
        and not_codes.stderr.startswith("error: ")
        and "codes file" in not_codes.stderr
    )
    model_on_run = vqt("info", tiny_image_run, "--model", tiny_image_run)
    assert model_on_run.returncode == 1 and "--model applies to codes files" in model_on_run.stderr
