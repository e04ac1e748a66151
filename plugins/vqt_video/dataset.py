"""Video datasets: fixed-length clips cut from a folder of video files or a single file.

Splits (`split_by`) are by file or by frames. By file, deterministically over the sorted file list: every
10th file (index % 10 == 9) is "test" and the rest "train"; with 2 to 9 files the last file is "test". By
frames, each file keeps its first 80% of frames for "train" and its last 20% for "test" (so overlapping
clips never straddle the two), so that the held-out split has every scene in it. The default ("auto")
splits a folder by file, and a single file or the shipped sample (`path` "") by frames. Every
file of the split is decoded once, at construction, into memory as uint8 (RGB, at `size` and `fps`);
items are the clips tiling each file, converted to float32 in [0, 1] on access. A file split by frames
is decoded once for both splits while either dataset holds it.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from vqt_video.io import VIDEO_EXTENSIONS, read_video_uint8
from vqtoolkit.errors import VQTError
from vqtoolkit.media import is_held_out, media_files

SAMPLE_FOLDER = Path(__file__).resolve().parent / "data"
SAMPLE_FILE = SAMPLE_FOLDER / "bigbuckbunny" / "bigbuckbunny_64.mp4"
# the shipped sample: Big Buck Bunny (animation, 25 fps), OpenCV's pedestrians (10 fps) and tree (15 fps)
SAMPLE_FILES = (
    SAMPLE_FILE,
    SAMPLE_FOLDER / "opencv" / "vtest_64.mp4",
    SAMPLE_FOLDER / "opencv" / "tree_64.mp4",
)
PROGRESS_ABOVE = 20  # show a progress bar when decoding more files than this
TEST_FRACTION = 0.2  # of a single file's frames
# decoded files split by frames, kept while a dataset holds them: (path, mtime, size, fps) -> video
_DECODED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class VideoDataset(Dataset):
    """(3, frames, H, W) float32 clips of in-memory uint8 (3, T, H, W) videos, starting every `hop` frames.

    Frames after a video's last whole clip are left out; a video shorter than one clip gives none.
    """

    def __init__(self, videos: list[Tensor], frames: int, hop: int):
        self.videos, self.frames = videos, frames
        self.starts = [
            (index, start)
            for index, video in enumerate(videos)
            for start in range(0, video.shape[1] - frames + 1, hop)
        ]  # (video, first frame) per item

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> Tensor:
        video_index, start = self.starts[index]
        return self.videos[video_index][:, start : start + self.frames].float() / 255


def video_dataset(
    path: str,
    split: str,
    channels: int,
    frames: int = 8,  # frames per clip
    size: list[int] = (64, 64),  # [height, width] every frame is resized to; empty keeps the native size
    fps: float = 0.0,  # frame rate every file is resampled to (dropping/repeating frames); 0 = the file's own
    hop: int = 0,  # frames between clip starts; 0 = `frames` (no overlap)
    split_by: str = "auto",  # "files", "frames" (each file's last 20% held out) or "auto" (see above)
) -> VideoDataset:
    """The video dataset of a recipe's `data` section; `path` "" is the shipped sample (SAMPLE_FILES)."""
    if split not in ("train", "test"):
        raise VQTError(f"split must be 'train' or 'test', got {split!r}")
    if channels != 3:
        raise VQTError("data.channels: video is RGB; use 3")
    if len(size) not in (0, 2) or any(side < 1 for side in size):
        raise VQTError(f"data.size must be [height, width] with positive sides, or empty; got {list(size)}")
    for name, value, least in (("frames", frames, 1), ("fps", fps, 0), ("hop", hop, 0)):
        if value < least:
            raise VQTError(f"data.{name} must be at least {least}, got {value}")
    if split_by not in ("auto", "files", "frames"):
        raise VQTError(f"data.split_by must be 'auto', 'files' or 'frames', got {split_by!r}")
    files = video_files(Path(path).expanduser()) if path else list(SAMPLE_FILES)
    if split_by == "files" and len(files) == 1:
        raise VQTError(f"{files[0]}: data.split_by=files needs 2 or more files; use 'frames' for one")
    by_frames = split_by == "frames" or (split_by == "auto" and (len(files) == 1 or not path))
    chosen = files if by_frames else [
        file for index, file in enumerate(files) if is_held_out(index, len(files)) == (split == "test")
    ]  # fmt: skip
    quiet = len(chosen) <= PROGRESS_ABOVE
    progress = tqdm(chosen, desc=f"decoding {split} video", unit="file", disable=quiet)
    if by_frames:
        videos = [_frames_of_split(_decoded_once(file, size, fps), split) for file in progress]
    else:
        videos = [read_video_uint8(file, size, fps)[0] for file in progress]
    _check_uniform_size(videos, chosen)
    dataset = VideoDataset(videos, frames, hop or frames)
    if len(dataset) == 0:
        longest = max(video.shape[1] for video in videos)
        where = SAMPLE_FOLDER if not path else files[0] if len(files) == 1 else Path(path).expanduser()
        raise VQTError(
            f"{where}: no clip of data.frames={frames} fits the {split} split (its longest video has "
            f"{longest} frames)"
        )
    return dataset


def _decoded_once(file: Path, size: list[int], fps: float) -> Tensor:
    """The file's uint8 video, decoded by an earlier call if a dataset still holds that one."""
    try:
        key = (str(file.resolve()), file.stat().st_mtime_ns, tuple(size), fps)
    except OSError:  # read_video_uint8 says what is wrong with it
        return read_video_uint8(file, size, fps)[0]
    video = _DECODED.get(key)
    if video is None:
        video = _DECODED[key] = read_video_uint8(file, size, fps)[0]
    return video


def _frames_of_split(video: Tensor, split: str) -> Tensor:
    """A file's first 80% of frames for "train", its last 20% for "test"."""
    cut = video.shape[1] - round(video.shape[1] * TEST_FRACTION)
    return video[:, cut:] if split == "test" else video[:, :cut]


def _check_uniform_size(videos: list[Tensor], files: list[Path]) -> None:
    """Without data.size every video must share the first one's size, or clips could not be batched."""
    first = tuple(videos[0].shape[2:])
    for video, file in zip(videos[1:], files[1:]):
        if tuple(video.shape[2:]) != first:
            raise VQTError(
                f"{file}: video is {video.shape[2]}x{video.shape[3]} (HxW) but {files[0].name} is "
                f"{first[0]}x{first[1]}; set data.size to bring them to one size"
            )


def video_files(path: Path) -> list[Path]:
    """The sorted video files of a folder (recursively), or the file itself."""
    return media_files(path, VIDEO_EXTENSIONS, "video")
