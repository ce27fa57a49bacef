"""Write the selected records unchanged, in selection order, plus the manifest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson

from mig_ray.pools.annotated import AnnotatedPool, parquet_rows
from mig_ray.pools.rejects import PoolError


def output_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise PoolError(f"{path}: output must end in .jsonl or .parquet")


def _raw_lines(pool: AnnotatedPool, positions: np.ndarray) -> Iterator[bytes]:
    with open(pool.path, "rb") as f:
        for pos in positions:
            f.seek(int(pool.locations[pos]))
            line = f.readline()
            yield line if line.endswith(b"\n") else line + b"\n"


def write_selected(pool: AnnotatedPool, positions: np.ndarray, out: Path) -> None:
    """Records as they were in the input (JSONL lines byte for byte; Parquet rows as rows)."""
    if pool.format == "jsonl":
        write_records(out, "jsonl", _raw_lines(pool, positions))
    else:
        table = parquet_rows(pool.path, pool.locations[positions])
        write_records(out, "parquet", table.to_pylist(), table.schema)


def write_records(out: Path, in_format: str, records: Iterable, schema=None) -> None:
    """Write selected records: JSONL input gives raw lines (bytes), Parquet input row dicts + schema."""
    fmt = output_format(out)
    tmp = out.with_name(out.name + ".tmp")
    if in_format == "jsonl" and fmt == "jsonl":
        with open(tmp, "wb") as w:
            for line in records:
                w.write(line)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [orjson.loads(r) for r in records] if in_format == "jsonl" else list(records)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    else:
        with open(tmp, "wb") as w:
            for rec in records:
                w.write(orjson.dumps(rec, default=str) + b"\n")
    tmp.replace(out)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as w:
        for row in rows:
            w.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    tmp.replace(path)
