"""Speech datasets: fixed-length mono segments cut from a folder of audio files or a single file.

Splits are by file, deterministically, over the sorted file list: every 10th file (index % 10 == 9) is
"test" and the rest "train". With 2 to 9 files the last file is "test"; a single file keeps its first 90%
of samples for "train" and its last 10% for "test". Every file of the split is decoded once, at
construction, into memory (mono, at `sample_rate`); items are the segments tiling each file.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from vqt_speech.io import AUDIO_EXTENSIONS, read_audio
from vqtoolkit.errors import VQTError
from vqtoolkit.media import is_held_out, media_files

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "asterisk_small"
PROGRESS_ABOVE = 20  # show a progress bar when decoding more files than this
TEST_FRACTION = 0.1  # of a single file's samples


class SpeechDataset(Dataset):
    """(1, segment) float32 pieces of in-memory (1, T) clips, starting every `hop` samples in each clip.

    Each clip is zero-padded at its end up to the end of its last segment, so every sample is in some
    segment (a clip shorter than a segment gives one, padded).
    """

    def __init__(self, clips: list[Tensor], segment: int, hop: int):
        self.segment = segment
        self.clips: list[Tensor] = []
        self.starts: list[tuple[int, int]] = []  # (clip, first sample) per item
        for clip_index, clip in enumerate(clips):
            count = math.ceil(max(clip.shape[-1] - segment, 0) / hop) + 1
            padded_length = (count - 1) * hop + segment
            self.clips.append(F.pad(clip, (0, padded_length - clip.shape[-1])))
            self.starts.extend((clip_index, i * hop) for i in range(count))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> Tensor:
        clip_index, start = self.starts[index]
        return self.clips[clip_index][:, start : start + self.segment]


def speech_dataset(
    path: str,
    split: str,
    channels: int,
    sample_rate: int = 16000,  # Hz; every file is resampled to it
    segment: int = 16384,  # samples per item (about 1 s at 16 kHz)
    hop: int = 0,  # samples between segment starts; 0 = `segment` (no overlap)
) -> SpeechDataset:
    """The speech dataset of a recipe's `data` section; `path` "" is the shipped Asterisk prompts subset."""
    if split not in ("train", "test"):
        raise VQTError(f"split must be 'train' or 'test', got {split!r}")
    if channels != 1:
        raise VQTError("data.channels: speech is mono; use 1")
    for name, value, least in (("sample_rate", sample_rate, 1), ("segment", segment, 1), ("hop", hop, 0)):
        if value < least:
            raise VQTError(f"data.{name} must be at least {least}, got {value}")
    folder = Path(path).expanduser() if path else SAMPLE_DIR
    if not folder.exists() and "data/speech" in folder.as_posix():  # the speech recipe's corpus
        raise VQTError(f"{path}: no such folder; build the speech corpus: vqt speech-corpus data/speech")
    files = audio_files(folder)
    if len(files) == 1:
        audio, _ = read_audio(files[0], sample_rate)
        cut = audio.shape[-1] - round(audio.shape[-1] * TEST_FRACTION)
        clips = [audio[:, cut:] if split == "test" else audio[:, :cut]]
    else:
        chosen = [
            file for index, file in enumerate(files) if is_held_out(index, len(files)) == (split == "test")
        ]
        quiet = len(chosen) <= PROGRESS_ABOVE
        progress = tqdm(chosen, desc=f"decoding {split} audio", unit="file", disable=quiet)
        clips = [read_audio(file, sample_rate)[0] for file in progress]
    return SpeechDataset(clips, segment, hop or segment)


def audio_files(path: Path) -> list[Path]:
    """The sorted audio files of a folder (recursively), or the file itself."""
    return media_files(path, AUDIO_EXTENSIONS, "audio")
