"""The data stage: real datasets (downloaded, checksum-verified) and offline synthetic ones.

`prepare_dataset` writes the dataset file and `prepare_human` the human-comparison file of
docs/ARCHITECTURE.md; `check_available` tells, before any training, whether the real files
are in place, and `fetch` downloads them.
"""

from ssltrace.data.datasets import (
    DATASETS,
    HUMAN_SETS,
    DataSource,
    check_available,
    describe,
    fetch,
    prepare_dataset,
    prepare_human,
)
from ssltrace.data.download import DataUnavailableError, RemoteFile
from ssltrace.data.synthetic import synthetic_reference_confusion
from ssltrace.data.validate import DataFormatError, validate_dataset, validate_human

__all__ = [
    "DATASETS",
    "HUMAN_SETS",
    "DataFormatError",
    "DataSource",
    "DataUnavailableError",
    "RemoteFile",
    "check_available",
    "describe",
    "fetch",
    "prepare_dataset",
    "prepare_human",
    "synthetic_reference_confusion",
    "validate_dataset",
    "validate_human",
]
