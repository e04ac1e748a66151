"""`vqt speech-corpus`: speakers split whole into train/ or test/, 16 kHz WAV, a README of the sources."""

from __future__ import annotations

from conftest import ROOT, run_vqt
from vqt_speech import corpus
from vqt_speech.io import read_audio

HELD_OUT = ROOT / "plugins" / "vqt_speech" / "data" / "heldout"


def test_corpus_puts_each_speaker_wholly_in_one_split(tmp_path, monkeypatch):
    sources = (
        corpus.Source("fr", "pkg-fr", str(HELD_OUT / "asterisk-fr" / "*.g722"), "CC-BY-SA-3.0", "French"),
        corpus.Source("it", "pkg-it", str(HELD_OUT / "asterisk-it" / "*.g722"), "CC-BY-3.0", "Italian", True),
        corpus.Source("none", "pkg-none", str(tmp_path / "absent" / "*.wav"), "-", "not installed"),
    )
    monkeypatch.setattr(corpus, "SOURCES", sources)
    found = corpus.build_corpus(tmp_path / "out", workers=1)
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == ["fr"]
    assert sorted(p.name for p in (tmp_path / "out" / "test").iterdir()) == ["it"]
    wavs = sorted((tmp_path / "out" / "test" / "it").glob("*.wav"))
    assert len(wavs) == 3 and found["it"]["files"] == 3 and found["none"]["files"] == 0
    original = read_audio(sorted((HELD_OUT / "asterisk-it").glob("*.g722"))[0])[0]
    assert read_audio(wavs[0])[0].shape == original.shape
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| it | test | 3 |" in readme and "CC-BY-3.0" in readme


def test_corpus_refuses_a_folder_that_holds_files(tmp_path):
    (tmp_path / "old.wav").write_bytes(b"")
    result = run_vqt("speech-corpus", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path}: exists and is not an empty folder; give a new folder\n"
