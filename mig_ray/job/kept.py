"""The records the stages after dedup read: the ingest parts less the rows the dedup stage dropped.

The dedup stage writes no second copy of the pool: per ingest part it lists the positions it left
out (duplicates and contaminated records) in `dedup/dropped/part-NNNNNN.parquet`, a few bytes a
dropped record, and every later reader filters the part by them. Rewriting the kept records cost
as much as a third of the stage (reading, filtering and compressing every part again) and stored
the pool twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from mig_ray.storage import Location, location, read_parquet, write_parquet_atomic

DROPPED = "dropped"
SCHEMA = pa.schema([("position", pa.int64())])


def dropped_folder(out: Location) -> Location:
    return out / "dedup" / DROPPED


def write_dropped(folder: Location, name: str, positions: np.ndarray) -> None:
    """One ingest part's dropped positions, sorted."""
    table = pa.Table.from_arrays([pa.array(np.sort(np.asarray(positions, dtype=np.int64)))], schema=SCHEMA)
    write_parquet_atomic(table, folder / name)


def dropped_positions(folder: str | None, name: str) -> np.ndarray:
    """One part's dropped positions (none when the job does not curate)."""
    if folder is None:
        return np.zeros(0, dtype=np.int64)
    return read_parquet(location(folder) / name, columns=["position"]).column("position").to_numpy()


def all_dropped(folder: Location) -> np.ndarray:
    """Every part's dropped positions, sorted (8 bytes each: 40 MB at 10^8 records with 5% dropped)."""
    parts = sorted(folder.glob("part-*.parquet"))
    arrays = [read_parquet(p, columns=["position"]).column("position").to_numpy() for p in parts]
    return np.sort(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)


def without(table: pa.Table, dropped: np.ndarray) -> pa.Table:
    """The table's rows whose position is not dropped (the table needs its position column)."""
    if not len(dropped) or not table.num_rows:
        return table
    pos = table.column("position").to_numpy()
    at = np.minimum(np.searchsorted(dropped, pos), len(dropped) - 1)
    return table.filter(pa.array(dropped[at] != pos))


def _without_batch(batch: pa.Table, dropped: Any) -> pa.Table:
    """A Ray Data batch less the dropped rows (`dropped`: the object-store reference of the array;
    Ray Data hands fn_kwargs over as they are)."""
    import ray

    return without(batch, ray.get(dropped))


def record_source(out: Location, curates: bool) -> Any:
    """The kept records as the annotators read them: the ingest folder itself when the job does not
    curate, else a Ray dataset of its parts filtered by every dropped position (put in the object
    store once)."""
    from mig_ray.annotate.runner import AUX_CPUS

    parts = out / "ingest" / "parts"
    if not curates:
        return parts
    import ray
    import ray.data

    dropped = ray.put(all_dropped(dropped_folder(out)))
    return ray.data.read_parquet(str(parts), num_cpus=AUX_CPUS).map_batches(
        _without_batch, fn_kwargs={"dropped": dropped}, batch_format="pyarrow", num_cpus=AUX_CPUS)
