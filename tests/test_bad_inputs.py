"""Bad inputs for every reader and command: one line `error: <path>: <problem>`, exit 1, no traceback.

The valid oddities (1x1 and 8K frames, 8 channels, 7 and 96 kHz, silence, names with spaces and bytes that
are not UTF-8) must work and give correct output. Media are made here with PyAV and torch, small.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import ROOT, run_vqt, vqt
from safetensors import safe_open
from safetensors.torch import save_file
from vqt_image.io import read_image, write_image
from vqt_speech.io import read_audio
from vqt_video.io import read_video, video_info

from vqtoolkit.inference.codes import read_codes

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # chmod 000 does not stop root from reading
ODD_NAME = os.fsdecode(b"caf\xe9 au lait")  # a space and a byte that is not UTF-8 (a surrogate in str)
SUFFIX = {"image": ".png", "speech": ".wav", "video": ".mp4"}
RATE = 16000  # the tiny speech model's sample rate

# ---------------------------------------------------------------- making media


def wav(path: Path, samples: np.ndarray, rate: int, codec: str = "pcm_s16le") -> Path:
    """(C, n) float samples in [-1, 1] written with PyAV; the container follows the suffix."""
    layout = {1: "mono", 2: "stereo", 8: "7.1"}[samples.shape[0]]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if samples.shape[1]:
            packed = np.round(samples.T.reshape(1, -1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(packed), format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, 0
            container.mux(stream.encode(frame))
        container.start_encoding()  # the header, even with no samples
        container.mux(stream.encode(None))
    return path


def tone(rate: int, channels: int = 1, seconds: float = 0.4) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (200 + 50 * c) * t) for c in range(channels)]).astype(
        np.float32
    )


def png(path: Path, height: int = 12, width: int = 10) -> Path:
    ramp = torch.linspace(0, 1, width).expand(height, width)
    write_image(path, ramp[None].clone())
    return path


def mp4(path: Path, frames: int = 4, height: int = 16, width: int = 16, pix_fmt: str = "yuv420p") -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = height, width, pix_fmt
        stream.options = {"preset": "ultrafast"}
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        for index in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = ramp[None, :, None]
            image[..., 1] = 20 * index
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def audio_only(path: Path) -> Path:
    return wav(path, tone(RATE), RATE, codec="aac")


def lock(path: Path) -> Path:
    """chmod 000, in a test that reads the file in this process (root reads through it: such a test skips,
    and test_unreadable_files_as_root_without_its_reading_rights covers the case for root)."""
    if IS_ROOT:
        pytest.skip("running as root: chmod 000 does not stop reading (a setpriv test stands in)")
    path.chmod(0)
    return path


def valid_media(modality: str, path: Path) -> Path:
    return {"image": png, "speech": lambda p: wav(p, tone(RATE), RATE), "video": mp4}[modality](path)


class Plant:
    """Unpickling this creates the marker file: proof that a loader executed a pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant_pickle(path: Path, marker: Path, torch_format: bool = True) -> Path:
    if torch_format:
        torch.save({"weight": torch.zeros(2), "payload": Plant(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Plant(marker)))
    return path


# ---------------------------------------------------------------- the bad media files

# kind -> modality -> expected problem (the text after "<path>: ")
BAD_MEDIA = {
    "empty": dict.fromkeys(SUFFIX, "empty file"),
    "truncated": {
        "image": "not a readable image",
        "speech": "not a readable audio file",
        "video": "not a readable video file",
    },
    "random": {
        "image": "not a readable image",
        "speech": "not a readable audio file",
        "video": "not a readable video file",
    },
    "wrong-extension": {  # a wav named .png, a png named .wav, a png named .mp4
        "image": "not a readable image",
        "speech": "no audio stream",
        "video": "not a video",
    },
    "no-stream": {"speech": "no audio stream", "video": "no video stream"},
    "zero-samples": {"speech": "holds no samples"},
    "missing": dict.fromkeys(SUFFIX, "no such file or directory"),
    "directory": dict.fromkeys(SUFFIX, "holds no"),
    "unreadable": dict.fromkeys(SUFFIX, "Permission denied"),
    "odd-name": {
        "image": "not a readable image",
        "speech": "not a readable audio file",
        "video": "not a readable video file",
    },
}
BAD_CASES = [(kind, modality) for kind, problems in BAD_MEDIA.items() for modality in problems]


def bad_media(kind: str, modality: str, folder: Path) -> Path:
    suffix = SUFFIX[modality]
    path = folder / f"{kind}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":  # mp4 and m4a keep their index (moov) at the end: half a file has none
        whole = {"image": png, "speech": audio_only, "video": mp4}[modality](folder / f"whole{suffix}")
        path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    elif kind in ("random", "odd-name"):
        path = folder / f"{ODD_NAME}{suffix}" if kind == "odd-name" else path
        path.write_bytes(np.random.default_rng(len(kind)).bytes(3000))
    elif kind == "wrong-extension":
        source = wav(folder / "sound.wav", tone(RATE), RATE) if modality == "image" else png(folder / "p.png")
        os.replace(source, path)
    elif kind == "no-stream":  # a video without sound (speech reads mp4), a sound without video
        path = mp4(path.with_suffix(".mp4")) if modality == "speech" else audio_only(path)
    elif kind == "zero-samples":
        wav(path, np.zeros((1, 0), np.float32), RATE)
    elif kind == "directory":  # named like a media file, holding none
        path.mkdir()
    elif kind == "unreadable":
        lock(valid_media(modality, path))
    return path


def shown(path) -> str:
    """A path as Python prints it: a byte that is not UTF-8 as a backslash escape, not an encoding error."""
    return str(path).encode("utf-8", "backslashreplace").decode()


def assert_one_line_error(result, path, problem: str) -> None:
    """Exit 1 and, on stderr, exactly one line: `error: <path>[:line]: <problem>`, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert re.match(rf"error: {re.escape(shown(path))}(:\d+)?: ", lines[0]), (lines[0], path)
    assert problem in lines[0], (lines[0], problem)


@pytest.fixture(scope="session")
def tiny_runs(tiny_image_run, tiny_speech_run, tiny_video_run) -> dict[str, Path]:
    return {"image": tiny_image_run, "speech": tiny_speech_run, "video": tiny_video_run}


# ---------------------------------------------------------------- every reader, through the commands


@pytest.mark.hostile("media")
@pytest.mark.parametrize("kind, modality", BAD_CASES, ids=[f"{m}-{k}" for k, m in BAD_CASES])
def test_tokenize_bad_media(tiny_runs, tmp_path, kind, modality):
    path = bad_media(kind, modality, tmp_path / "in")
    out = tmp_path / "x.codes"
    result = vqt("tokenize", path, "--model", tiny_runs[modality], "-o", out)
    assert_one_line_error(result, path, BAD_MEDIA[kind][modality])
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


EVAL_CASES = [(k, m) for k, m in BAD_CASES if k in ("empty", "truncated", "random", "missing", "no-stream")]


@pytest.mark.hostile("media")
@pytest.mark.parametrize("kind, modality", EVAL_CASES, ids=[f"{m}-{k}" for k, m in EVAL_CASES])
def test_eval_and_train_on_bad_data(tiny_runs, tmp_path, kind, modality):
    path = bad_media(kind, modality, tmp_path / "in")
    problem = BAD_MEDIA[kind][modality]
    assert_one_line_error(vqt("eval", tiny_runs[modality], "--data", path), path, problem)
    if kind in ("random", "missing"):  # training reads its data before building anything
        recipe = ROOT / "recipes" / f"{modality}_vqvae.yaml"
        result = vqt("train", recipe, f"data.path={path}", f"train.out_dir={tmp_path / 'run'}")
        assert_one_line_error(result, path, problem)


@pytest.mark.hostile("media")
def test_batch_reports_every_bad_file_and_writes_every_good_one(tiny_image_run, tmp_path):
    folder = tmp_path / "in"
    kinds = [kind for kind in BAD_MEDIA if "image" in BAD_MEDIA[kind] and kind != "directory"]
    bad = [bad_media(kind, "image", folder) for kind in kinds if not (IS_ROOT and kind == "unreadable")]
    good = [png(folder / name) for name in ("a.png", f"{ODD_NAME} 2.png", "b c.png")]
    result = vqt("tokenize", *bad, *good, "--model", tiny_image_run, "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad) + 1, result.stderr  # each bad file, then the summary
    for path in bad:
        assert any(line.startswith(f"error: {shown(path)}: ") for line in errors), (path, result.stderr)
    assert errors[-1] == f"error: {len(bad)} of {len(bad) + 3} inputs could not be tokenized (see above)"
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(p.stem + ".codes" for p in good)
    for path in good:
        codes, meta = read_codes(tmp_path / "out" / (path.stem + ".codes"))
        assert meta.original_shape == [12, 10] and codes.shape == (3, 3)


@pytest.mark.hostile("nothing lost")
def test_two_inputs_with_one_name_are_refused_before_writing(tiny_image_run, tmp_path):
    first, second = png(tmp_path / "a.png"), png(tmp_path / "sub" / "a.png")
    result = vqt("tokenize", first, second, "--model", tiny_image_run, "-o", tmp_path / "out")
    assert_one_line_error(result, second, "a.codes")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- valid oddities give correct output


def round_trip(run: Path, source: Path, out: Path):
    codes = out.with_suffix(".codes")
    tokenized = vqt("tokenize", source, "--model", run, "-o", codes)
    assert tokenized.returncode == 0, tokenized.stderr
    decoded = vqt("decode", codes, "--model", run, "-o", out)
    assert decoded.returncode == 0, decoded.stderr
    return read_codes(codes)


@pytest.mark.parametrize("height, width", [(1, 1), (4320, 7680)], ids=["1x1", "8K"])
def test_image_extreme_sizes(tiny_image_run, tmp_path, height, width):
    source = png(tmp_path / "in.png", height, width)
    codes, meta = round_trip(tiny_image_run, source, tmp_path / "out.png")
    assert meta.original_shape == [height, width] and codes.shape == (-(-height // 4), -(-width // 4))
    decoded, _ = read_image(tmp_path / "out.png")
    assert decoded.shape == (1, height, width) and decoded.isfinite().all()


@pytest.mark.parametrize(
    "rate, channels, silent",
    [(7000, 1, False), (96000, 1, False), (RATE, 8, False), (RATE, 1, True)],
    ids=["7kHz", "96kHz", "8-channel", "silence"],
)
def test_speech_odd_rates_channels_and_silence(tiny_speech_run, tmp_path, rate, channels, silent):
    samples = np.zeros((1, RATE // 2), np.float32) if silent else tone(rate, channels)
    source = wav(tmp_path / "in.wav", samples, rate)
    codes, meta = round_trip(tiny_speech_run, source, tmp_path / "out.wav")
    expected = read_audio(source, RATE)[0].shape[1]
    assert meta.original_shape == [expected] and meta.media["source"]["source_channels"] == channels
    decoded, info = read_audio(tmp_path / "out.wav", RATE)
    assert info["source_rate"] == RATE and decoded.shape == (1, expected) and decoded.isfinite().all()
    if silent:  # SI-SNR and the log-mel distance of silence against itself: numbers, not NaN
        result = vqt("eval", tiny_speech_run, "--data", source)
        assert result.returncode == 0, result.stderr
        metrics = __import__("json").loads(result.stdout)
        assert all(np.isfinite(value) for value in metrics.values()), metrics


@pytest.mark.parametrize("height, width", [(1, 1), (4320, 7680)], ids=["1x1", "8K"])
def test_video_extreme_sizes(tiny_video_run, tmp_path, height, width):
    # yuv444p: h264 in 4:2:0 cannot hold a 1x1 frame. The writer pads odd sides to even (4:2:0), so a
    # 1x1 source comes back 2x2, its pixel repeated; 8K (level 6 of h264) comes back at 8K.
    source = mp4(tmp_path / "in.mp4", frames=2, height=height, width=width, pix_fmt="yuv444p")
    round_trip(tiny_video_run, source, tmp_path / "out.mp4")
    info = video_info(tmp_path / "out.mp4")
    assert (info["frames"], info["height"], info["width"]) == (2, height + height % 2, width + width % 2)
    if height == 1:
        video, _ = read_video(tmp_path / "out.mp4")
        assert video.isfinite().all() and (video[:, :, :1, :1] == video).all()


@pytest.mark.parametrize("modality", list(SUFFIX))
def test_odd_file_names_round_trip(tiny_runs, tmp_path, modality):
    folder = tmp_path / "a folder"
    folder.mkdir()
    source = valid_media(modality, folder / f"{ODD_NAME}{SUFFIX[modality]}")
    round_trip(tiny_runs[modality], source, folder / f"{ODD_NAME} out{SUFFIX[modality]}")
    assert (folder / f"{ODD_NAME} out{SUFFIX[modality]}").stat().st_size > 0


# ---------------------------------------------------------------- codes files (vqt decode)

BAD_CODES = {
    "empty": "not a readable codes file",
    "truncated": "not a readable codes file",
    "random": "not a readable codes file",
    "wrong-extension": "not a readable codes file",  # a png named .codes
    "pickle": "not a readable codes file",
    "missing": "no such codes file",
    "directory": "is a directory",
    "unreadable": "Permission denied",
    "odd-name": "not a readable codes file",
}


@pytest.fixture(scope="module")
def image_codes(tiny_image_run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("codes")
    codes = folder / "good.codes"
    assert vqt("tokenize", png(folder / "a.png"), "--model", tiny_image_run, "-o", codes).returncode == 0
    return codes


def bad_codes(kind: str, folder: Path, good: Path, marker: Path) -> Path:
    path = folder / (f"{ODD_NAME}.codes" if kind == "odd-name" else f"{kind}.codes")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:-7])
    elif kind in ("random", "odd-name"):
        path.write_bytes(np.random.default_rng(1).bytes(500))
    elif kind == "wrong-extension":
        shutil.copy(png(folder / "p.png"), path)
    elif kind == "pickle":
        plant_pickle(path, marker, torch_format=False)
    elif kind == "directory":
        path.mkdir()
    elif kind == "unreadable":
        lock(Path(shutil.copy(good, path)))
    return path


@pytest.mark.hostile("codes files")
@pytest.mark.parametrize("kind", list(BAD_CODES))
def test_decode_bad_codes(tiny_image_run, image_codes, tmp_path, kind):
    marker = tmp_path / "executed"
    path = bad_codes(kind, tmp_path, image_codes, marker)
    result = vqt("decode", path, "--model", tiny_image_run, "-o", tmp_path / "out.png")
    assert_one_line_error(result, path, BAD_CODES[kind])
    assert not (tmp_path / "out.png").exists() and not marker.exists()


@pytest.mark.hostile("codes files")
def test_codes_disagreeing_with_the_model_are_refused_before_decoding(tiny_image_run, image_codes, tmp_path):
    with safe_open(str(image_codes), "pt") as f:
        meta, codes = f.metadata(), f.get_tensor("codes")
    cases = {  # metadata -> problem
        "original_shape": ("[120, 10]", "does not fit the code grid [3, 3]"),
        "codebook_sizes": ("[64]", "codebook sizes [64] do not match"),
        "latent_grid": ('"3x3"', "metadata is invalid: latent_grid '3x3'"),
        "media": ("[1, 2]", "metadata is invalid: media [1, 2] is not a mapping"),
        "version": ('"1"', "metadata is invalid: version '1' is not an integer"),
        "modality": ('"video"', "holds video codes"),
    }
    for key, (value, problem) in cases.items():
        path = tmp_path / f"{key}.codes"
        save_file({"codes": codes}, str(path), metadata={**meta, key: value})
        result = vqt("decode", path, "--model", tiny_image_run, "-o", tmp_path / "out.png")
        assert_one_line_error(result, path, problem)
        assert not (tmp_path / "out.png").exists()


# ---------------------------------------------------------------- run directories and recipes

BAD_RUNS = {  # kind -> (file in the run directory that is named, problem)
    "missing": ("", "not a vqt run directory"),
    "a-file": ("", "not a vqt run directory"),
    "empty-weights": ("model.safetensors", "not a valid safetensors file"),
    "truncated-weights": ("model.safetensors", "not a valid safetensors file"),
    "random-weights": ("model.safetensors", "not a valid safetensors file"),
    "pickled-weights": ("model.safetensors", "not a valid safetensors file"),
    "random-config": ("config.yaml", "not a text file"),
    "empty-config": ("config.yaml", "empty recipe"),
}


def bad_run(kind: str, good: Path, folder: Path, marker: Path) -> Path:
    run = folder / f"run {kind}"
    if kind == "a-file":
        run.write_bytes(b"not a folder")
        return run
    if kind == "missing":
        return run
    shutil.copytree(good, run)
    weights, config = run / "model.safetensors", run / "config.yaml"
    if kind == "empty-weights":
        weights.write_bytes(b"")
    elif kind == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "random-weights":
        weights.write_bytes(np.random.default_rng(2).bytes(2000))
    elif kind == "pickled-weights":
        plant_pickle(weights, marker)
    elif kind == "random-config":
        config.write_bytes(np.random.default_rng(3).bytes(300))
    elif kind == "empty-config":
        config.write_bytes(b"")
    return run


@pytest.mark.hostile("run directories")
@pytest.mark.parametrize("kind", list(BAD_RUNS))
def test_bad_run_directories(tiny_image_run, image_codes, tmp_path, kind):
    marker = tmp_path / "executed"
    run = bad_run(kind, tiny_image_run, tmp_path, marker)
    named, problem = BAD_RUNS[kind]
    where = run / named if named else run
    picture = png(tmp_path / "a.png")
    commands = [
        ("tokenize", picture, "--model", run, "-o", tmp_path / "a.codes"),
        ("decode", image_codes, "--model", run, "-o", tmp_path / "a_out.png"),
        ("eval", run),
        ("sample", "--model", run, "--prior", run, "-n", "1", "-o", tmp_path / "samples"),
        ("train", "--resume", run),
    ]
    for command in commands:
        assert_one_line_error(vqt(*command), where, problem)
    assert not marker.exists()
    assert not (tmp_path / "a.codes").exists() and not (tmp_path / "a_out.png").exists()


DAMAGED_LOG_LINES = {
    "not UTF-8": b"\x00\xff\xfe{\n",
    "not JSON": b"not json\n",
    "not a record": b"[1, 2, 3]\n",
    "a string step": b'{"step": "12", "split": "eval", "mse": 0.1}\n',
    "a string value": b'{"step": 30, "split": "eval", "mse": "low"}\n',
    "one very long line": b'{"step": 31, "split": "eval", "mse": ' + b"1" * 2**21 + b"}\n",
    "cut short": b'{"step": 32, "spl',
}


@pytest.mark.hostile("run directories")
@pytest.mark.parametrize("damage", list(DAMAGED_LOG_LINES))
def test_a_damaged_metrics_log_is_read_line_by_line(tiny_image_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_image_run, run)
    with open(run / "metrics.jsonl", "ab") as log:
        log.write(DAMAGED_LOG_LINES[damage])
    info = vqt("info", run, "--json")
    assert info.returncode == 0, info.stderr
    final = json.loads(info.stdout)["final_metrics"]
    assert final and all(isinstance(value, (int, float)) for value in final.values())
    report = vqt("report", run, "-o", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    resumed = vqt("train", "--resume", run, "train.max_steps=21")
    assert resumed.returncode == 0, resumed.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 21


@pytest.mark.hostile("media")
@pytest.mark.parametrize("device", ["meta", "xla", "cuda:x", "cuda:7", "gpu"])
def test_a_device_that_cannot_run_is_one_line_naming_the_option(tiny_image_run, tmp_path, device):
    picture = png(tmp_path / "a.png")
    options = ["--model", tiny_image_run, "--device", device, "-o", tmp_path / "a.codes"]
    result = vqt("tokenize", picture, *options)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: --device: ") and device in result.stderr
    assert not (tmp_path / "a.codes").exists()


@pytest.mark.hostile("run directories")
def test_pickles_planted_as_resumable_state_and_prior_are_refused(tiny_image_run, tmp_path):
    marker = tmp_path / "executed"
    run = tmp_path / "run"
    shutil.copytree(tiny_image_run, run)
    plant_pickle(run / "state.safetensors", marker)
    result = vqt("train", "--resume", run, "train.max_steps=25")
    assert_one_line_error(result, run / "state.safetensors", "not a valid safetensors file")
    prior = tmp_path / "prior"
    prior.mkdir()
    recipe = (ROOT / "recipes/image_prior.yaml").read_text()
    (prior / "config.yaml").write_text(recipe.replace("runs/image_vqvae", str(tiny_image_run), 1))
    plant_pickle(prior / "model.safetensors", marker, torch_format=False)
    for command in (
        ("sample", "--model", tiny_image_run, "--prior", prior, "-o", tmp_path / "s"),
        ("eval", prior),
    ):
        assert_one_line_error(vqt(*command), prior / "model.safetensors", "not a valid safetensors file")
    assert not marker.exists()


BAD_RECIPES = {
    "empty": "empty recipe",
    "truncated": "unknown modality",
    "random": "not a text file",
    "wrong-extension": "not a text file",  # a png named .yaml
    "missing": "cannot read recipe",
    "directory": "cannot read recipe",
    "unreadable": "Permission denied",
    "endless": "larger than 1 MB; not a recipe",  # /dev/zero: read no further than the limit
    "huge": "larger than 1 MB; not a recipe",
    "python-tag": "not valid YAML",
    "os-system": "unknown encoder 'os.system'",
    "builtins-eval": "unknown bottleneck 'builtins.eval'",
    # hostile YAML: aliases that expand exponentially, deep nesting, repeated keys
    "billion-laughs": "expands to more than 10000 values",
    "laughs-in-a-section": "expands to more than 10000 values",
    "wide-alias-fan": "expands to more than 10000 values",
    "self-merging-aliases": "expands to more than 10000 values",
    "alias-of-a-huge-list": "expands to more than 10000 values",
    "deep-lists": "nested too deeply to be a recipe",
    "deep-mappings": "nested too deeply to be a recipe",
    "nested-20": "nested deeper than 16 levels",
    "nested-mappings-20": "nested deeper than 16 levels",
    "deep-in-options": "nested deeper than 16 levels",
    "duplicate-section": "duplicate key 'train'",
    "duplicate-key": "duplicate key 'max_steps'",
    "duplicate-component-option": "duplicate key 'hidden'",
    "duplicate-quoted-key": "duplicate key 'lr'",
    "duplicate-in-flow-mapping": "duplicate key 'name'",
}


def laughs(levels: int = 9, prefix: str = "") -> str:
    lines = [f'{prefix}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{prefix}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "billion-laughs": lambda text: laughs() + text,
    "laughs-in-a-section": lambda text: text.replace("data:\n", "data:\n" + laughs(prefix="  "), 1),
    "wide-alias-fan": lambda text: (
        "x: &x [" + ", ".join(["1"] * 200) + "]\ny: [" + ", ".join(["*x"] * 100) + "]\n" + text
    ),
    "self-merging-aliases": lambda text: (
        "a: &a {k0: 1, k1: 2}\n"
        + "".join(
            f"m{i}: &m{i} [{', '.join([f'*{p}' for p in (['a'] if i == 0 else [f'm{i - 1}'] * 12)])}]\n"
            for i in range(5)
        )  # fmt: skip
        + text
    ),
    "alias-of-a-huge-list": lambda text: (
        "big: &big [" + ", ".join(["0"] * 5000) + "]\nagain: [*big, *big, *big]\n" + text
    ),
    "deep-lists": lambda text: text + "extra: " + "[" * 3000 + "]" * 3000 + "\n",
    "deep-mappings": lambda text: text + "extra: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "nested-20": lambda text: text + "extra: " + "[" * 20 + "]" * 20 + "\n",
    "nested-mappings-20": lambda text: text + "extra: " + "{a: " * 20 + "1" + "}" * 20 + "\n",
    "deep-in-options": lambda text: text.replace(
        "data:\n", "data:\n  deep: " + "[" * 20 + "]" * 20 + "\n", 1
    ),
    "duplicate-section": lambda text: text + "train:\n  max_steps: 3\n",
    "duplicate-key": lambda text: text.replace("  max_steps: 600\n", "  max_steps: 600\n  max_steps: 3\n", 1),
    "duplicate-component-option": lambda text: text.replace(
        "  encoder: {name: vqvae2d", "  encoder: {hidden: 8, hidden: 9, name: vqvae2d", 1
    ),
    "duplicate-quoted-key": lambda text: text.replace("optim:\n", "optim:\n  'lr': 0.1\n  \"lr\": 0.2\n", 1),
    "duplicate-in-flow-mapping": lambda text: text.replace(
        "loss: {name: mse}", "loss: {name: mse, name: l1}", 1
    ),
}


def bad_recipe(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.yaml"
    text = (ROOT / "recipes/image_vqvae.yaml").read_text()
    if kind == "empty":
        path.write_text("")
    elif kind == "truncated":
        path.write_text(text[: text.index("modality: image") + len("modality: ima")])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(4).bytes(300))
    elif kind == "wrong-extension":
        shutil.copy(png(folder / "p.png"), path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "endless":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        path.write_text(text + "# padding\n" * 200_000)
    elif kind == "unreadable":
        path.write_text(text)
        lock(path)
    elif kind == "python-tag":
        path.write_text(f"{text}\nextra: !!python/object/apply:os.system ['touch {folder}/executed']\n")
    elif kind == "os-system":
        path.write_text(text.replace("name: vqvae2d", "name: os.system", 1))
    elif kind == "builtins-eval":
        path.write_text(text.replace("name: vq\n", "name: builtins.eval\n", 1))
    elif kind in HOSTILE_YAML:
        hostile = HOSTILE_YAML[kind](text)
        assert hostile != text, kind
        path.write_text(hostile)
    return path


@pytest.mark.hostile("hostile YAML")
@pytest.mark.parametrize("kind", list(BAD_RECIPES))
def test_bad_recipes(tmp_path, kind):
    path = bad_recipe(kind, tmp_path)
    for command in (("validate", path), ("train", path, f"train.out_dir={tmp_path / 'run'}")):
        assert_one_line_error(vqt(*command), path, BAD_RECIPES[kind])
    assert not (tmp_path / "executed").exists() and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- real processes: nothing reaches stderr


@pytest.mark.hostile("error lines")
def test_real_processes_print_one_line_without_traceback(tiny_runs, tmp_path):
    marker = tmp_path / "executed"
    video = bad_media("random", "video", tmp_path / "in")
    codes = plant_pickle(tmp_path / f"{ODD_NAME}.codes", marker, torch_format=False)
    recipe = bad_recipe("random", tmp_path)
    cases = [
        (("tokenize", video, "--model", tiny_runs["video"], "-o", tmp_path / "v.codes"), video),
        (("decode", codes, "--model", tiny_runs["image"], "-o", tmp_path / "x.png"), codes),
    ]
    for args, path in cases:
        assert_one_line_error(run_vqt(*map(str, args)), path, "not a")
    assert not marker.exists()
    debug = run_vqt("--debug", "validate", str(recipe))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# Root reads through chmod 000 because it holds these capabilities; setpriv drops them for the command.
WITHOUT_ROOT_READING = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.hostile("media")
@pytest.mark.skipif(not IS_ROOT, reason="as a normal user the chmod 000 cases above run directly")
@pytest.mark.skipif(
    not shutil.which("setpriv"), reason="needs setpriv (util-linux) to drop root's reading rights"
)
def test_unreadable_files_as_root_without_its_reading_rights(tiny_runs, image_codes, tmp_path):
    locked = {m: valid_media(m, tmp_path / f"locked{SUFFIX[m]}") for m in SUFFIX}
    locked["codes"] = Path(shutil.copy(image_codes, tmp_path / "locked.codes"))
    locked["recipe"] = Path(shutil.copy(ROOT / "recipes/image_vqvae.yaml", tmp_path / "locked.yaml"))
    for path in locked.values():
        path.chmod(0)
    out = tmp_path / "out"
    commands = [
        *[
            (("tokenize", locked[m], "--model", tiny_runs[m], "-o", out / f"{m}.codes"), locked[m])
            for m in SUFFIX
        ],
        (("decode", locked["codes"], "--model", tiny_runs["image"], "-o", out / "x.png"), locked["codes"]),
        (("validate", locked["recipe"]), locked["recipe"]),
    ]
    for args, path in commands:
        result = run_vqt(*map(str, args), prefix=WITHOUT_ROOT_READING)
        assert_one_line_error(result, path, "Permission denied")
    assert not out.exists() or not list(out.iterdir())
