"""Names and paths: probe kinds, epoch file names and every result path of a study.

One place for each: the workflow's rules, the CLI, training, extraction and the planner all
build paths here. Patterns are relative to `results_dir` and use the workflow's wildcard
names (`{method}`, `{seed}`, `{probe}`, ...); `path(results_dir, PATTERN, **fields)` fills the
fields given and leaves the others as `{field}` for Snakemake.

    data/{dataset}.npz, data/human_{human}.npz      the dataset and human-comparison files
    data/neural_{neural}.nc                         a simulated neural dataset (generated)
    splits/split.json                               the known/novel split
    probes/{probe}.npz                              one file per probe kind (PROBES)
    probes/random_targets.npz                       random-target label sets (seed 004 §5)
    runs/{method}/seed{seed}/checkpoints/epoch_EEE.pt, train_log.tsv, .state/
    activations/{method}/seed{seed}/{probe}/epoch_EEE.npz
    metrics/{analysis}/{method}/seed{seed}.tsv      a run's tidy table of one analysis
    metrics/{analysis}/{method}/seed{seed}_{array}.npz  the matrices it wrote beside it
    tables/{analysis}.tsv                           the study table of one analysis
    tables/{analysis}_{array}.npz                   a study matrix file comparing its runs
    figures/{stem}.{fmt}                            stem = <paper>/<figure name>
    cache/{stage}/                                  per-epoch results by content key
    logs/{stage}/...                                one log per job
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

# Probe sets extracted for every checkpoint (written by ssltrace.splits, ARCHITECTURE.md;
# `neural`: the images of the config's neural and behaviour datasets, ssltrace.data.neural).
PROBES = ("novel", "human", "rdm", "known", "sample", "neural", "gratings", "objects")

DATASET = "data/{dataset}.npz"
HUMAN = "data/human_{human}.npz"
NEURAL = "data/neural_{neural}.nc"
SPLIT = "splits/split.json"
PROBE = "probes/{probe}.npz"
# Random-target label sets for the known probe images (ssltrace.targets); not a probe kind.
TARGET_LABELS = "probes/random_targets.npz"
RUN = "runs/{method}/seed{seed}"
CHECKPOINTS = RUN + "/checkpoints"
TRAIN_LOG = RUN + "/train_log.tsv"
RUN_ACTIVATIONS = "activations/{method}/seed{seed}"  # one folder per probe set below
ACTIVATIONS = RUN_ACTIVATIONS + "/{probe}"
METRIC_TABLE = "metrics/{analysis}/{method}/seed{seed}.tsv"
METRIC_ARRAYS = "metrics/{analysis}/{method}/seed{seed}_{array}.npz"
STUDY_TABLE = "tables/{analysis}.tsv"
# Study-level matrices computed from every run's output of an analysis (the t-tests between
# methods of seed 003 ED Figs. 1, 8: ssltrace.analysis.ttests).
STUDY_ARRAYS = "tables/{analysis}_{array}.npz"
FIGURE = "figures/{stem}.{fmt}"
CACHE = "cache"
LOGS = "logs"


def epoch_file(epoch: int, suffix: str = ".npz") -> str:
    """`epoch_EEE<suffix>`: checkpoints (.pt) and per-epoch activations (.npz)."""
    return f"epoch_{int(epoch):03d}{suffix}"


def epoch_files(folder: str | Path, epochs: Iterable[int], suffix: str = ".npz") -> list[Path]:
    return [Path(folder) / epoch_file(e, suffix) for e in epochs]


def path(results_dir: str | Path, pattern: str, **fields) -> str:
    """`results_dir/pattern` with the given fields filled in; others stay `{field}`."""
    return f"{results_dir}/{fill(pattern, **fields)}"


def fill(pattern: str, **fields) -> str:
    """`pattern` with the given fields substituted, every other `{field}` kept as it is."""
    out = []
    for text, name, _spec, _conv in string.Formatter().parse(pattern):
        out.append(text)
        if name is not None:
            out.append(str(fields[name]) if name in fields else f"{{{name}}}")
    return "".join(out)
