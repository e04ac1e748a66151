"""A fourth modality, written from docs/plugins.md alone: multichannel time series in CSV files (a header
row, then one row per time step, one column per channel, values in [0, 1]). It gets every `vqt` command
without a change to the toolkit."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vqtoolkit.errors import VQTError
from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.modality import Modality, check_numbers

RATE = 100.0  # rows per second


def read_series(path, channels: int = 1) -> tuple[torch.Tensor, dict]:
    """(channels, rows) floats and {"rows", "columns"}; one line naming the file for anything else."""
    path = Path(path)
    try:
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
        values = torch.tensor([[float(v) for v in row] for row in rows[1:]], dtype=torch.float32)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VQTError(f"{path}: not a CSV of numbers ({exc})") from None
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] != channels:
        raise VQTError(f"{path}: expected rows of {channels} numbers, got shape {tuple(values.shape)}")
    return values.T.contiguous(), {"rows": values.shape[0], "columns": channels}


def write_series(path, series: torch.Tensor, meta: dict) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([f"channel_{c}" for c in range(series.shape[0])])
        writer.writerows([[f"{v:.6f}" for v in row] for row in series.T.tolist()])


class SeriesWindows(Dataset):
    """Non-overlapping windows of `segment` rows from the CSV files of a folder; the last file is held out."""

    def __init__(self, path: str, split: str, channels: int = 1, segment: int = 64):
        files = sorted(Path(path).glob("*.csv")) if path else []
        if len(files) < 2:
            raise VQTError(f"{path or 'data.path'}: needs a folder of at least two CSV files")
        files = files[-1:] if split == "test" else files[:-1]
        series = [read_series(file, channels)[0] for file in files]
        starts = [(s, i) for s in series for i in range(0, s.shape[1] - segment + 1, segment)]
        self.windows = [s[:, i : i + segment] for s, i in starts]
        if not self.windows:
            raise VQTError(f"{path}: no file of the {split} split has {segment} rows")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.windows[index]


def series_dataset(path: str, split: str, channels: int, segment: int = 64) -> SeriesWindows:
    return SeriesWindows(path, split, channels, segment)


def report_picture(originals, reconstructions, path, options: dict) -> None:
    from vqtoolkit.report import paired, pyplot, save

    plt = pyplot()
    rows = paired(originals, reconstructions)
    figure, axes = plt.subplots(len(rows), 1, figsize=(8, 1.2 * len(rows)), squeeze=False)
    for axis, (title, series) in zip(axes[:, 0], rows):
        axis.plot(series.T.numpy())
        axis.set_ylabel(title, fontsize=8)
    save(figure, path)


def max_error(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Per example: the largest absolute error of any value."""
    return (reconstruction - original).abs().flatten(1).amax(1)


@hookimpl
def register_modalities(register):
    register(
        "series",
        Modality(
            name="series",
            rank=1,
            extensions=(".csv",),
            dataset=series_dataset,
            encoder="conv",
            decoder="conv",
            loss="mse",
            read=read_series,
            write=write_series,
            check_media=lambda media: check_numbers(
                media, {"rows": (int, 1, 2**24), "columns": (int, 1, 64)}, required=("rows",)
            ),
            report_picture=report_picture,
            report_picture_name="series.png",
            report_samples=2,
            time_rate=lambda media: RATE,
            example_grid=lambda options: [int(options.get("segment", 64))],
        ),
    )


@hookimpl
def register_metrics(register):
    register("max_error", max_error, higher_is_better=False)
