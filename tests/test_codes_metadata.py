"""Codes files are untrusted: tampered media and chunking metadata are one line before any allocation."""

import json

import pytest
from conftest import ROOT, vqt
from safetensors import safe_open
from safetensors.torch import save_file
from test_bad_inputs import assert_one_line_error
from vqt_image.dataset import image_dataset
from vqt_image.io import write_image

SPEECH = ROOT / "plugins/vqt_speech/data/asterisk_small/dir-instr.g722"
VIDEO = ROOT / "plugins/vqt_video/data/bigbuckbunny/bigbuckbunny_64.mp4"

CASES = {  # modality -> [(edit of the metadata, problem)]
    "speech": [
        (lambda m: m["media"].update(sample_rate="16000"), "sample_rate '16000' is not an integer"),
        (lambda m: m["media"].pop("sample_rate"), "sample_rate is missing"),
        (lambda m: m["media"].update(sample_rate=10**9), "sample_rate 1000000000 is not an integer"),
        (lambda m: m["media"].update(sample_rate=True), "sample_rate True is not an integer"),
        (lambda m: m["media"].update(length=-5), "length -5 is not an integer"),
        (lambda m: m["chunking"].update(chunk="big"), "chunking.chunk 'big' is not an integer"),
        (lambda m: m["chunking"].update(chunk=0), "chunking.chunk 0 is not an integer"),
        (lambda m: m["chunking"].update(context=-1), "chunking.context -1 is not an integer"),
    ],
    "video": [
        (
            lambda m: m["media"]["source"].update(height=100000, width=100000),
            "height 100000 is not an integer",
        ),
        (lambda m: m["media"].update(fps="25"), "fps '25' is not a number"),
        (lambda m: m["media"].update(fps=1e9), "fps 1000000000.0 is not a number"),
        (lambda m: m["media"]["source"].update(fps=float("nan")), "fps nan is not a number"),
        (lambda m: m["media"].update(source=[640, 480]), "[640, 480] is not a mapping"),
    ],
    "image": [
        (lambda m: m["media"].update(height="28"), "height '28' is not an integer"),
        (lambda m: m["media"].update(width=0), "width 0 is not an integer"),
        (lambda m: m["media"].update(height=10**7), "height 10000000 is not an integer"),
        (lambda m: m["media"].update(width=2.5), "width 2.5 is not an integer"),
        (lambda m: m["media"].update(height=None), "height None is not an integer"),
    ],
}
OUTPUT = {"speech": "out.wav", "video": "out.mp4", "image": "out.png"}

pytestmark = pytest.mark.hostile("codes files")


@pytest.fixture(scope="module")
def codes_of(tiny_image_run, tiny_speech_run, tiny_video_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("codes")
    picture = folder / "shirt.png"
    write_image(picture, image_dataset("", "test", 1)[0])
    made = {}
    for modality, run, source in (
        ("speech", tiny_speech_run, SPEECH),
        ("video", tiny_video_run, VIDEO),
        ("image", tiny_image_run, picture),
    ):
        made[modality] = (run, folder / f"{modality}.codes")
        assert vqt("tokenize", source, "--model", run, "-o", made[modality][1]).returncode == 0
    return made


@pytest.mark.parametrize("modality", CASES)
def test_tampered_media_metadata_is_one_line_naming_the_codes_file(codes_of, modality, tmp_path):
    run, good = codes_of[modality]
    with safe_open(str(good), "pt") as f:
        header, codes = f.metadata(), f.get_tensor("codes")
    for index, (edit, problem) in enumerate(CASES[modality]):
        meta = {"media": json.loads(header["media"]), "chunking": json.loads(header["chunking"])}
        edit(meta)
        path = tmp_path / f"{index}.codes"
        save_file(
            {"codes": codes}, str(path), metadata={**header, **{k: json.dumps(v) for k, v in meta.items()}}
        )
        out = tmp_path / OUTPUT[modality]
        result = vqt("decode", path, "--model", run, "-o", out)
        assert_one_line_error(result, path, problem)
        assert not out.exists()


def test_a_codes_file_is_read_no_further_than_its_header_says(codes_of, tmp_path):
    run, good = codes_of["image"]
    data = good.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    cases = {
        "trailing.codes": (
            data + b"\0" * 4096,
            f"describes {len(data)} bytes, the file has {len(data) + 4096}",
        ),
        "cut.codes": (data[:-3], f"describes {len(data)} bytes, the file has {len(data) - 3}"),
        "huge-header.codes": ((2**40).to_bytes(8, "little") + data[8:], f"header claims {2**40} bytes"),
        "header-past-end.codes": ((len(data)).to_bytes(8, "little") + data[8:], "header claims"),
        "no-header.codes": (data[:5], "header claims"),
        "header-not-json.codes": (
            data[:8] + b"x" * header_length + data[8 + header_length :],
            "not a readable",
        ),
    }
    for name, (content, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = vqt("decode", path, "--model", run, "-o", tmp_path / "out.png")
        assert_one_line_error(result, path, problem)
