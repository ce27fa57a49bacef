"""Write the selected records unchanged, in selection order, plus the manifest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson

from mig_ray.errors import PoolError
from mig_ray.pools.annotated import AnnotatedPool, parquet_rows


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

        if in_format == "jsonl":
            write_parquet_records([orjson.loads(r) for r in records], tmp)
        else:
            pq.write_table(pa.Table.from_pylist(list(records), schema=schema), tmp)
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


JSON_COLUMNS_KEY = b"mig_ray.json_columns"


def _writable(t) -> bool:
    """Parquet cannot store a struct without fields (what `{}` in every record infers to)."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        return t.num_fields > 0 and all(_writable(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _writable(t.value_type)
    if pa.types.is_map(t):
        return _writable(t.key_type) and _writable(t.item_type)
    return True


def _json_text(v) -> str | None:
    if v is None:
        return None
    try:
        return orjson.dumps(v, default=str).decode()
    except TypeError:  # beyond orjson (an int over 64 bits, nesting past 255 levels)
        import json

        return json.dumps(v, default=str, ensure_ascii=False)


def records_table(rows: list[dict]):
    """An Arrow table of JSON records whatever their shapes.

    Columns are the union of the records' keys in first-seen order (a missing key is null). Each
    column's type is inferred over all records, with Arrow's promotion (int and float give double,
    objects with different keys one struct of all of them). A column whose values have no common
    type (an int in one record, a string in another) or no Parquet type (`{}` everywhere) holds
    each value's JSON text instead; the schema metadata `mig_ray.json_columns` names those columns.
    """
    import pyarrow as pa

    names = list(dict.fromkeys(k for r in rows for k in r))
    arrays, as_json = [], []
    for k in names:
        values = [r.get(k) for r in rows]
        try:
            arr = pa.array(values)
            ok = _writable(arr.type)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            ok = False
        if not ok:
            arr = pa.array([_json_text(v) for v in values], pa.string())
            as_json.append(k)
        arrays.append(arr)
    table = pa.table(dict(zip(names, arrays, strict=True))) if names else pa.table({})
    return table.replace_schema_metadata({JSON_COLUMNS_KEY: orjson.dumps(as_json)}) if as_json else table


def write_parquet_records(rows: list[dict], path: Path) -> None:
    """Selected records as Parquet (see `records_table`); never fails on a record's shape: if the
    typed table still cannot be written, every column holds JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = records_table(rows)
    try:
        pq.write_table(table, path)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        names = table.column_names
        cols = {k: pa.array([_json_text(r.get(k)) for r in rows], pa.string()) for k in names}
        pq.write_table(pa.table(cols).replace_schema_metadata({JSON_COLUMNS_KEY: orjson.dumps(names)}), path)
