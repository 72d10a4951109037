"""The rows an archive job writes: their schema, and part files written whole and read as a dataset."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.serving.archive.rows import COLUMNS, FIELDS

SCHEMA = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in FIELDS])
FORMATS = ("parquet", "csv")
SUFFIXES = tuple(f".{fmt}" for fmt in FORMATS)


def _file_format(suffix: str) -> ds.FileFormat:
    if suffix == ".parquet":
        return ds.ParquetFileFormat()
    # Every column typed by the schema, and an empty field a null: CSV rows read back as Parquet's do.
    return ds.CsvFileFormat(convert_options=pa_csv.ConvertOptions(column_types=SCHEMA, strings_can_be_null=True))


def table(batches: list[dict[str, list]]) -> pa.Table:
    """Batches of rows as a screener gives them (a list per column) as one table of the parts' schema."""
    return pa.table({name: [value for batch in batches for value in batch[name]] for name in COLUMNS}, schema=SCHEMA)


def read_parts(parts: list[Path], columns: list[str] | None = None) -> pa.Table:
    """The rows of these part files (Parquet or CSV, told by suffix), only the columns asked for."""
    tables = [SCHEMA.empty_table().select(columns or list(COLUMNS))]
    for suffix in SUFFIXES:
        files = [str(p) for p in parts if p.suffix == suffix]
        if files:
            dataset = ds.dataset(files, schema=SCHEMA, format=_file_format(suffix))
            tables.append(dataset.to_table(columns=columns or list(COLUMNS)))
    return pa.concat_tables(tables)


def valid_parquet(parts: list[Path]) -> set[Path]:
    """The Parquet files among parts whose footer reads: a writer killed midway leaves none."""
    files = [str(p) for p in parts if p.suffix == ".parquet"]
    if not files:
        return set()
    return {Path(f) for f in ds.dataset(files, format="parquet", exclude_invalid_files=True).files}


def write_part(table: pa.Table, folder: Path, index: int, fmt: str) -> Path:
    """Written under a hidden name, then renamed into place: a visible part is always whole."""
    final = folder / f"part-{index:05d}.{fmt}"
    hidden = folder / f".{final.name}.tmp"
    if fmt == "parquet":
        pq.write_table(table, hidden)
    else:
        pa_csv.write_csv(table, hidden)
    os.replace(hidden, final)
    return final
