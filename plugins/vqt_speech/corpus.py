"""`vqt speech-corpus OUT`: a multi-speaker 16 kHz speech corpus from speech that Debian packages ship.

The held-out split is by speaker: every file of a held-out voice is in `test/`, none in `train/`, so
figures on `test/` measure how a model does on voices it never heard. Files are written as 16 kHz mono
WAV under OUT/{train,test}/<speaker>/, with OUT/README.md listing sources, licences and durations.
"""

from __future__ import annotations

import glob
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from vqtoolkit.errors import VQTError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Source:
    speaker: str  # folder name under train/ or test/
    package: str  # the Debian package that ships it
    pattern: str  # glob of its files
    licence: str
    description: str
    held_out: bool = False


ASTERISK = "/usr/share/asterisk/sounds"
TUXPAINT = "/usr/share/tuxpaint/stamps/**/*_desc_{}.ogg"
TUXPAINT_TRAIN = ("ro", "es", "ru", "fr", "bg", "be", "ca", "lt", "nl")
TUXPAINT_TEST = ("da", "el")

SOURCES = (
    Source("festvox-ru", "festvox-ru", "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/*.wav",
           "BSD-style (festvox-ru)", "Russian male studio speaker, 16 kHz"),
    Source("asterisk-en", "asterisk-core-sounds-en-g722", f"{ASTERISK}/en_US_f_Allison/**/*.g722",
           "CC-BY-SA-3.0", "English IVR prompts, female (Allison), G.722 16 kHz"),
    Source("asterisk-es", "asterisk-core-sounds-es-g722", f"{ASTERISK}/es_MX_f_Allison/**/*.g722",
           "CC-BY-SA-3.0", "Spanish IVR prompts, the same female voice, G.722 16 kHz"),
    Source("asterisk-ru", "asterisk-core-sounds-ru-g722", f"{ASTERISK}/ru_RU_f_IvrvoiceRU/**/*.g722",
           "CC-BY-3.0", "Russian IVR prompts, female, G.722 16 kHz"),
    *(Source(f"tuxpaint-{lang}", "tuxpaint-stamps-default", TUXPAINT.format(lang), "GPL-2",
             f"Tux Paint stamp descriptions ({lang}), one volunteer, Vorbis 44.1 kHz")
      for lang in TUXPAINT_TRAIN),
    Source("asterisk-fr", "asterisk-core-sounds-fr-g722", f"{ASTERISK}/fr_CA_f_June/**/*.g722",
           "CC-BY-SA-3.0", "French IVR prompts, female (June), G.722 16 kHz", held_out=True),
    Source("asterisk-it", "asterisk-core-sounds-it-g722", f"{ASTERISK}/it_IT_m_Carlo/**/*.g722",
           "CC-BY-3.0", "Italian IVR prompts, male (Carlo), G.722 16 kHz", held_out=True),
    *(Source(f"tuxpaint-{lang}", "tuxpaint-stamps-default", TUXPAINT.format(lang), "GPL-2",
             f"Tux Paint stamp descriptions ({lang}), one volunteer, Vorbis 44.1 kHz", held_out=True)
      for lang in TUXPAINT_TEST),
)  # fmt: skip


def _convert(job: tuple[str, str]) -> float:
    """Decode one file, resample to 16 kHz mono, write it as WAV; returns its seconds (0 if unreadable)."""
    from vqt_speech.io import read_audio, write_audio

    source, target = job
    try:
        audio, _ = read_audio(source, SAMPLE_RATE)
    except VQTError:
        return 0.0
    write_audio(target, audio, sample_rate=SAMPLE_RATE)
    return audio.shape[-1] / SAMPLE_RATE


def build_corpus(out: Path, workers: int = 2, progress=None) -> dict[str, dict]:
    """Write the corpus into `out`; returns {speaker: {"split", "files", "seconds", ...}}. Sources whose
    package is not installed are skipped and reported as missing."""
    jobs, found = [], {}
    for source in SOURCES:
        files = sorted(glob.glob(source.pattern, recursive=True))
        split = "test" if source.held_out else "train"
        found[source.speaker] = {"source": source, "split": split, "files": len(files), "seconds": 0.0}
        for index, file in enumerate(files):  # numbered: stems repeat across sub-folders
            name = f"{index:05d}-{Path(file).stem}.wav"
            jobs.append((source.speaker, file, str(out / split / source.speaker / name)))
    if not any(info["files"] for info in found.values()):
        raise VQTError(f"{out}: none of the source packages is installed ({install_hint()})")
    pairs = [(file, target) for _, file, target in jobs]
    # spawned, not forked: a fork of a process whose torch threads are running can deadlock
    with (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        if workers > 1
        else (nullcontext()) as pool
    ):
        seconds = pool.map(_convert, pairs, chunksize=16) if pool else map(_convert, pairs)
        for (speaker, _, _), duration in zip(jobs, seconds):
            found[speaker]["seconds"] += duration
            if progress:
                progress(1)
    (out / "README.md").write_text(corpus_readme(found))
    return found


def count_files() -> int:
    return sum(len(glob.glob(source.pattern, recursive=True)) for source in SOURCES)


def install_hint() -> str:
    packages = sorted({source.package for source in SOURCES})
    return "apt-get install " + " ".join(packages)


def corpus_readme(found: dict[str, dict]) -> str:
    lines = [
        "# Speech corpus",
        "",
        "Built by `vqt speech-corpus` from Debian packages; 16 kHz mono WAV. The held-out split is by",
        "speaker: every voice in `test/` is absent from `train/`.",
        "",
        "| speaker | split | files | minutes | package | licence | description |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for speaker, info in found.items():
        source = info["source"]
        lines.append(
            f"| {speaker} | {info['split']} | {info['files']} | {info['seconds'] / 60:.1f} "
            f"| {source.package} | {source.licence} | {source.description} |"
        )
    for split in ("train", "test"):
        minutes = sum(i["seconds"] for i in found.values() if i["split"] == split) / 60
        lines.append(f"\n{split}: {minutes:.1f} minutes")
    return "\n".join(lines) + "\n"
