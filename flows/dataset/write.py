"""Parquet -> `datasets` folders (`load_from_disk` format), streamed in record batches.

Nothing is memory-mapped or held whole: the Arrow file is written batch by batch from the Parquet
file, so the orchestrator's memory does not grow with the dataset (65k prompts: ~1 GB of rows).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA_FILE = "data-00000-of-00001.arrow"


def write_dataset(parquet: Path, target: Path, fingerprint: str, batch_rows: int = 2048) -> int:
    """Write `target` as a `datasets.Dataset` folder holding the rows of `parquet`; returns rows."""
    import datasets

    datasets.disable_progress_bars()
    feats = datasets.Features.from_arrow_schema(pq.read_schema(parquet))
    # an empty Dataset saved by `datasets` itself gives the folder's metadata files and the schema
    # (with the features embedded); then its one data file is replaced by the streamed rows
    datasets.Dataset.from_dict({k: [] for k in feats}, features=feats).save_to_disk(str(target), num_shards=1)
    with pa.memory_map(str(target / DATA_FILE)) as f:
        schema = pa.ipc.open_stream(f).schema
    rows = 0
    tmp = target / f".{DATA_FILE}.tmp"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as out:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=batch_rows):
            if not batch.schema.equals(schema, check_metadata=False):
                batch = pa.Table.from_batches([batch]).cast(schema).combine_chunks().to_batches()[0]
            out.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
            rows += batch.num_rows
    os.replace(tmp, target / DATA_FILE)
    state_path = target / "state.json"
    state = json.loads(state_path.read_text())
    state["_fingerprint"] = fingerprint  # `.map()` caches are keyed by it: one per content
    state_path.write_text(json.dumps(state, indent=2))
    return rows


def write_dataset_dict(parquets: dict[str, Path], target: Path, fingerprint: str) -> dict[str, int]:
    """A `datasets.DatasetDict` folder, one split per Parquet file."""
    target.mkdir(parents=True, exist_ok=True)
    counts = {s: write_dataset(p, target / s, f"{fingerprint}-{s}") for s, p in parquets.items()}
    (target / "dataset_dict.json").write_text(json.dumps({"splits": list(parquets)}))
    return counts
