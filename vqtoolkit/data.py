"""Code datasets: the codes of a whole corpus in Arrow shards with an index, and `CodesDataset`, which
memory-maps them for training code.

A code dataset is the folder that `vqt tokenize DIR --dataset OUT` writes:

    manifest.json       what made it: the model (its path, hash, modality and codebook sizes), the
                        options, the number of files and of shards
    shard-00000.arrow   one row per tokenized file: `codes` (the file's codes, (Q, *grid) or (*grid),
    shard-00001.arrow   flattened; int16, or int32 past 32,767 codes), `path`, `shape`, `grid`,
    ...                 `duration_s`, `meta` (its codes-file metadata as JSON, enough to decode it)
    index.arrow         one row per item: path, shard, row, offset, length, shape, grid, duration_s,
                        model_hash; `offset` and `length` count codes in its shard's code buffer
    report.json         how many files were tokenized, and each file skipped with the reason

Every `.arrow` file is an uncompressed Arrow IPC stream with one record batch: the format Hugging Face
`datasets` keeps its own data in, so `datasets.Dataset.from_file(shard)` reads a shard as it is, and
`pyarrow.memory_map` hands numpy a shard's code buffer without copying it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqtoolkit.errors import VQTError
from vqtoolkit.files import atomic_write
from vqtoolkit.media import first_line

FORMAT, VERSION = "vqtoolkit.codes-dataset", 1
MANIFEST, INDEX, REPORT = "manifest.json", "index.arrow", "report.json"
MAX_JSON_BYTES = 64 * 2**20  # a manifest or report larger than this is not one this toolkit wrote


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.arrow"


def _arrow():
    try:
        import pyarrow as pa
    except ImportError:  # a core dependency; missing only in a broken install
        raise VQTError("code datasets need pyarrow: pip install pyarrow") from None
    return pa


def code_type(codebook_sizes: list[int]) -> str:
    return "int16" if max(codebook_sizes) <= 32767 else "int32"


def arrow_type(spec: str):
    """The Arrow type a column spec names: int32, int64, double, string, or list<item: int16 / int32>."""
    pa = _arrow()
    if spec.startswith("list<item: "):
        return pa.list_(arrow_type(spec.removeprefix("list<item: ").removesuffix(">")))
    return {"string": pa.string(), "double": pa.float64()}.get(spec) or getattr(pa, spec)()


def write_arrow(path: Path, columns: dict[str, list], specs: dict[str, str], metadata: dict) -> None:
    """One Arrow IPC stream file of `columns` (name -> values, all of one length; `specs` gives each one's
    type), through `atomic_write`: a reader or a resumed run sees the whole file or none of it."""
    pa = _arrow()
    schema = pa.schema([(name, arrow_type(specs[name])) for name in columns])
    arrays = {name: pa.array(values, type=schema.field(name).type) for name, values in columns.items()}
    table = pa.table(arrays)
    table = table.replace_schema_metadata({"vqtoolkit": json.dumps(metadata)})

    def write(tmp: str) -> None:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_batch(table.combine_chunks().to_batches()[0] if table.num_rows else _empty(table))

    atomic_write(path, write)


def _empty(table):
    pa = _arrow()
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in table.schema], schema=table.schema)


def read_arrow(path: Path, columns: dict[str, str]):
    """(table, its vqtoolkit metadata) of one Arrow stream file this module wrote, memory-mapped, after
    checking that it holds one record batch with these columns (name -> Arrow type as a string) and
    offsets that stay inside its buffers."""
    pa = _arrow()
    try:
        source = pa.memory_map(str(path))
        reader = pa.ipc.open_stream(source)
        batches = list(reader)
        table = pa.Table.from_batches(batches, schema=reader.schema)
        table.validate(full=True)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise VQTError(f"{path}: not a readable code dataset file ({first_line(exc)})") from None
    if len(batches) != 1:
        raise VQTError(f"{path}: holds {len(batches)} record batches; a code dataset file holds one")
    for name, kind in columns.items():
        if name not in table.column_names or str(table.schema.field(name).type) != kind:
            raise VQTError(f"{path}: has no column {name} of type {kind}")
    raw = (table.schema.metadata or {}).get(b"vqtoolkit", b"{}")
    try:
        metadata = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        metadata = None
    if not isinstance(metadata, dict):
        raise VQTError(f"{path}: its vqtoolkit metadata is not a JSON object")
    return table, metadata


def read_json(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise VQTError(f"{path}: {path.stat().st_size} bytes; not one this toolkit wrote")
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise VQTError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VQTError(f"{path}: not readable JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise VQTError(f"{path}: not a JSON object")
    return value


def write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2) + "\n"))


def read_manifest(folder: Path) -> dict:
    manifest = read_json(folder / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise VQTError(f"{folder}: not a code dataset (its {MANIFEST} is not a {FORMAT} manifest)")
    if manifest.get("version") != VERSION:
        raise VQTError(
            f"{folder}: code dataset version {manifest.get('version')!r}; this vqt reads {VERSION}"
        )
    sizes = manifest.get("codebook_sizes")
    if not (isinstance(sizes, list) and sizes and all(type(s) is int and 1 <= s <= 2**31 - 1 for s in sizes)):
        raise VQTError(f"{folder}: {MANIFEST} has no valid codebook_sizes")
    shards = manifest.get("shards")
    if type(shards) is not int or not 0 <= shards <= 10**7:
        raise VQTError(f"{folder}: {MANIFEST} has no valid shard count")
    return manifest


def shard_columns(codebook_sizes: list[int]) -> dict[str, str]:
    """Each shard column's type: the codes are int16 up to 32,767 codes, int32 past it."""
    return {
        "codes": f"list<item: {code_type(codebook_sizes)}>",
        "path": "string",
        "shape": "list<item: int32>",
        "grid": "list<item: int32>",
        "duration_s": "double",
        "meta": "string",
    }


INDEX_COLUMNS = {
    "path": "string",
    "shard": "int32",
    "row": "int32",
    "offset": "int64",
    "length": "int64",
    "shape": "list<item: int32>",
    "grid": "list<item: int32>",
    "duration_s": "double",
    "model_hash": "string",
}


class CodesDataset(torch.utils.data.Dataset):
    """The items of a code dataset (see the module's docstring), memory-mapped.

    `dataset[i]` is item i's codes as an int64 tensor, (Q, *grid) for a residual model or (*grid); with
    `window=W`, the dataset's items are instead every window of W steps along the grid's first axis (time
    for speech and video), `stride` steps apart (default W), and items shorter than W give none.
    `info(i)` is the index row of item i (path, grid, duration_s, ...), `meta(i)` its codes-file metadata.
    """

    def __init__(self, path: str | Path, window: int = 0, stride: int = 0):
        self.path = Path(path)
        if not self.path.is_dir():
            raise VQTError(f"{self.path}: no such code dataset folder")
        if window < 0 or stride < 0:
            raise VQTError(f"{self.path}: window and stride are counts of steps, not {window} and {stride}")
        self.manifest = read_manifest(self.path)
        self.codebook_sizes: list[int] = self.manifest["codebook_sizes"]
        index, _ = read_arrow(self.path / INDEX, INDEX_COLUMNS)
        self._index = {name: index.column(name).to_pylist() for name in INDEX_COLUMNS}
        self._shards, self._tables = [], []
        for number in range(self.manifest["shards"]):
            table, _ = read_arrow(self.path / shard_name(number), shard_columns(self.codebook_sizes))
            self._tables.append(table)
            self._shards.append(table.column("codes").chunks[0].values.to_numpy(zero_copy_only=True))
        self._check_index()
        self.window, self.stride = window, stride or window
        self._starts = self._windows() if window else None

    def _check_index(self) -> None:
        rows = [table.num_rows for table in self._tables]
        paths = [table.column("path").to_pylist() for table in self._tables]
        starts = [table.column("codes").chunks[0].offsets.to_numpy() for table in self._tables]
        for i, (shard, row, offset, length, shape) in enumerate(
            zip(*(self._index[k] for k in ("shard", "row", "offset", "length", "shape")))
        ):
            if not (0 <= shard < len(rows) and 0 <= row < rows[shard]):
                raise VQTError(f"{self.path / INDEX}: item {i} points at shard {shard} row {row}, not there")
            if paths[shard][row] != self._index["path"][i]:
                where = f"{self.path / INDEX}: item {i} is {self._index['path'][i]!r} in the index"
                raise VQTError(f"{where} but {paths[shard][row]!r} in shard {shard}")
            if (offset, offset + length) != (starts[shard][row], starts[shard][row + 1]):
                raise VQTError(f"{self.path / INDEX}: item {i} is not where shard {shard} holds its codes")
            grid = self._index["grid"][i]
            if (
                not shape
                or min(shape) < 1
                or math.prod(shape) != length
                or shape[len(shape) - len(grid) :] != grid
            ):
                raise VQTError(
                    f"{self.path / INDEX}: item {i} has shape {shape} and grid {grid} for {length} codes"
                )

    def _time_axis(self, i: int) -> int:
        return len(self._index["shape"][i]) - len(self._index["grid"][i])

    def _windows(self) -> list[tuple[int, int]]:
        """(start step, item) of every window; items too short for one give none."""
        starts = []
        for i, shape in enumerate(self._index["shape"]):
            steps = shape[self._time_axis(i)]
            starts += [(start, i) for start in range(0, steps - self.window + 1, self.stride)]
        return starts

    @property
    def items(self) -> int:
        """Items (tokenized files) in the dataset, whatever the window."""
        return len(self._index["path"])

    def __len__(self) -> int:
        return len(self._starts) if self._starts is not None else self.items

    def item(self, i: int) -> torch.Tensor:
        """The whole codes of item i (one tokenized file), int64."""
        if not 0 <= i < self.items:
            raise IndexError(f"item {i} of {self.items}")
        shard, offset, length = (self._index[k][i] for k in ("shard", "offset", "length"))
        values = self._shards[shard][offset : offset + length]
        if values.size and (values.min() < 0 or values.max() >= max(self.codebook_sizes)):
            raise VQTError(f"{self.path / shard_name(shard)}: item {i} holds codes outside its codebooks")
        return torch.from_numpy(values.astype(np.int64)).view(self._index["shape"][i])

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._starts is None:
            return self.item(i)
        if not 0 <= i < len(self._starts):
            raise IndexError(f"window {i} of {len(self._starts)}")
        start, item = self._starts[i]
        return self.item(item).narrow(self._time_axis(item), start, self.window).contiguous()

    def distinct_codes(self) -> int:
        """How many distinct codes the whole dataset holds (of any codebook)."""
        seen = np.zeros(max(self.codebook_sizes), dtype=bool)
        for values in self._shards:
            if values.size:
                if values.min() < 0 or values.max() >= len(seen):
                    raise VQTError(f"{self.path}: holds codes outside its codebooks")
                seen[np.unique(values)] = True
        return int(seen.sum())

    def info(self, i: int) -> dict[str, Any]:
        return {name: self._index[name][i] for name in INDEX_COLUMNS}

    def meta(self, i: int) -> dict[str, Any]:
        shard, row = self._index["shard"][i], self._index["row"][i]
        return json.loads(self._tables[shard].column("meta")[row].as_py())

    def item_of_window(self, i: int) -> int:
        return self._starts[i][1] if self._starts is not None else i
