"""Batch reconstruction over folders of volumes: the engine, the folders it reads, its reports.

* :mod:`invdiff.batch.engine`: resumable, sharded runs of named methods over every slice, with
  fastMRI-convention metrics and submission files, and a record of each run's parameters that a
  resume must match;
* :mod:`invdiff.batch.folders`: folders of fastMRI files and CT volumes as problems;
* :mod:`invdiff.batch.report`: the markdown table and figures of a run folder.
"""

from invdiff.batch.engine import (
    BatchResult,
    Dataset,
    Shard,
    Volume,
    check_record,
    item_seed,
    markdown_summary,
    merge,
    prior_identity,
    read_rows,
    read_shard,
    resolve_shard,
    run_batch,
    slice_metrics,
    summarise,
)

__all__ = [
    "BatchResult",
    "Dataset",
    "Shard",
    "Volume",
    "check_record",
    "item_seed",
    "markdown_summary",
    "merge",
    "prior_identity",
    "read_rows",
    "read_shard",
    "resolve_shard",
    "run_batch",
    "slice_metrics",
    "summarise",
]
