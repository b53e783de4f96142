"""The contract of a pipeline analysis, and the one runner that applies any of them to a run.

An analysis is a class behind the `ANALYSES` registry (`ssltrace.analysis`), defined in the
module of the same name beside the measures it applies. It declares

- `inputs`: role -> what it reads of one run: `Activations(probe)` (one file per analysed
  epoch), `ProbeFile(kind)` (a probe set), `Artifact(analysis, array)` (another analysis's
  matrix file of the same run) or `TargetLabels()` (the study's random-target label sets);
- `arrays`: the matrix files it writes beside its table (`metrics/{name}/..._{array}.npz`);
- `sections`: the config sections its settings come from (a change reruns it);
- `resources`: what its job asks of a scheduler;

and implements `run(job) -> Result` (an instance holds the job's settings): tidy rows
(epoch, layer, probe, metric, value) and the arrays of each matrix file. `run_job` writes
them; it never interprets them. Most analyses measure each epoch on its own: they derive
from `PerEpochAnalysis` and implement `epoch()`, and the base caches each epoch's result by
content (`ssltrace.store`), so extending a study computes only new or changed epochs.

The workflow's rule template (workflow/rules/metrics.smk) and the CLI verb
(`ssltrace analyse NAME`) read these declarations; adding an analysis touches neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ssltrace import io, layout, tables
from ssltrace.store import EpochCache, file_digest, make_key

Log = Callable[[str], None]
Row = tuple[int, str, str, str, float]  # epoch, layer, probe, metric, value
EpochRows = list[tuple[str, str, str, float]]  # layer, probe, metric, value


@dataclass(frozen=True)
class Activations:
    """Per-epoch activation files of probe set `probe` (a directory of epoch_EEE.npz)."""

    probe: str

    def pattern(self) -> str:
        return layout.fill(layout.ACTIVATIONS, probe=self.probe)


@dataclass(frozen=True)
class ProbeFile:
    """The probe-set file of `kind`."""

    kind: str

    def pattern(self) -> str:
        return layout.fill(layout.PROBE, probe=self.kind)


@dataclass(frozen=True)
class Artifact:
    """Matrix file `array` written by analysis `analysis` for the same run."""

    analysis: str
    array: str

    def pattern(self) -> str:
        return layout.fill(layout.METRIC_ARRAYS, analysis=self.analysis, array=self.array)


@dataclass(frozen=True)
class TargetLabels:
    """The random-target label sets of the known probe images (`ssltrace.targets`, seed 004
    §5), one file for the study, written by the workflow's `target_labels` rule."""

    def pattern(self) -> str:
        return layout.TARGET_LABELS


class Checkpoints:
    """The run's checkpoint folder (one epoch_EEE.pt per analysed epoch), for analyses of the
    weights or of the network itself rather than of extracted activations."""

    def pattern(self) -> str:
        return layout.CHECKPOINTS


Input = Activations | ProbeFile | Artifact | TargetLabels | Checkpoints


@dataclass
class Job:
    """One run's inputs (role -> path: a directory for Activations, else a file)."""

    method: str
    seed: int
    epochs: list[int]
    inputs: dict[str, Path]
    cache_dir: Path | None = None
    log: Log = print

    def epoch_files(self, role: str) -> list[Path]:
        return layout.epoch_files(self.inputs[role], self.epochs)


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class Analysis:
    """Base class: subclasses set the declarations below and implement `run`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `ssltrace list`, citing the paper
    inputs: ClassVar[dict[str, Input]] = {}
    arrays: ClassVar[tuple[str, ...]] = ()
    sections: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[dict[str, int]] = {"mem_mb": 4000, "runtime": 30}

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = dict(settings)

    @classmethod
    def config_settings(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The config sections of `sections` merged in order (later keys win)."""
        merged: dict[str, Any] = {}
        for section in cls.sections:
            merged.update(cfg[section])
        return merged

    def run(self, job: Job) -> Result:
        raise NotImplementedError


class PerEpochAnalysis(Analysis):
    """An analysis that measures each epoch's activations on their own.

    Subclasses implement `epoch(role, acts)` (acts: the activation file's arrays) returning
    rows and this epoch's arrays; the array named `stacked` is stacked over epochs into the
    first of `arrays`, epoch-invariant arrays are kept once. `across(results)` may add rows
    that compare epochs, `extra_arrays()` arrays that belong to the whole run.
    """

    stacked: ClassVar[str | None] = None

    def roles(self) -> list[str]:
        """The activation roles read (all declared Activations by default)."""
        return [r for r, spec in self.inputs.items() if isinstance(spec, Activations)]

    def cache_settings(self) -> Any:
        """What besides the activations an epoch's result depends on (its cache key)."""
        return self.settings

    def prepare(self, job: Job) -> None:
        """Read what the whole job shares (e.g. a probe file) before the first epoch."""

    def epoch(self, role: str, acts: dict[str, np.ndarray]) -> tuple[EpochRows, dict]:
        raise NotImplementedError

    def across(self, results: list[EpochResult]) -> list[Row]:
        return []

    def extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def run(self, job: Job) -> Result:
        self.prepare(job)
        results = [
            result
            for role in self.roles()
            for result in per_epoch(self, role, job.epoch_files(role), job)
        ]
        rows = [(r.epoch, *row) for r in results for row in r.rows]
        rows += self.across(results)
        arrays = {}
        if self.stacked is not None:
            arrays[self.arrays[0]] = {**stack(results, self.stacked), **self.extra_arrays()}
        return Result(rows, arrays)


@dataclass
class EpochResult:
    role: str
    epoch: int
    rows: EpochRows
    arrays: dict[str, np.ndarray]


def per_epoch(
    analysis: PerEpochAnalysis, role: str, files: Sequence[Path], job: Job
) -> Iterator[EpochResult]:
    """Each activations file's result, computing only what the cache lacks."""
    cache = EpochCache(job.cache_dir, analysis.name, log=job.log)
    setting = analysis.cache_settings()
    for path in files:
        key = make_key(analysis.name, role, activation_key(path, job.inputs[role]), setting)
        hit = cache.load_result(key)
        if hit is not None:
            rows, arrays = hit
            rows = [tuple(r) for r in rows]
            job.log(f"{analysis.name} {role} epoch {int(arrays['epoch'])}: cached")
        else:
            acts = read_activations(path, job.inputs[role])
            rows, arrays = analysis.epoch(role, acts)
            arrays["epoch"] = np.int64(acts["epoch"])
            cache.save_result(key, [list(r) for r in rows], arrays)
            job.log(f"{analysis.name} {role} epoch {int(arrays['epoch'])}: {len(rows)} values")
        yield EpochResult(role, int(arrays["epoch"]), rows, arrays)


def activation_key(path: Path, folder: Path | None = None) -> str:
    """The content key an extraction stored in its file (or the file's digest if absent)."""
    found = read_activations(path, folder, keys=["cache_key"], missing_ok=True)
    return str(found["cache_key"]) if "cache_key" in found else file_digest(path)


def read_activations(path: Path, folder: Path | None = None, **options) -> dict[str, np.ndarray]:
    """An epoch's activations (`io.load_npz`, verified). A missing or damaged file also
    removes `folder`, the extraction's output holding it, so that the workflow's next run
    extracts it again (from the cache where the entry is sound) instead of failing again.
    Activations stored as float16 (`extract.dtype`) come back as float32: float16 is a
    storage format, and sums over thousands of units in it would lose precision."""
    try:
        if not path.is_file():
            raise io.ArtifactReadError(f"activations {path} are missing", path, advice=False)
        found = io.load_npz(path, **options)
        return {
            key: value.astype(np.float32) if value.dtype == np.float16 else value
            for key, value in found.items()
        }
    except io.ArtifactReadError as error:
        if folder is not None and (error.removed or not path.exists()):
            raise error.remove_folder(folder) from error.__cause__
        raise


def stack(results: Sequence[EpochResult], name: str) -> dict[str, np.ndarray]:
    """Array `name` stacked over epochs; the epoch-invariant arrays kept once."""
    first = results[0].arrays
    out = {key: value for key, value in first.items() if key not in (name, "epoch")}
    out[name] = np.stack([r.arrays[name] for r in results])
    out["epochs"] = np.array([r.epoch for r in results], dtype=np.int64)
    return out


def layer_names(acts: Mapping[str, np.ndarray]) -> list[str]:
    return [str(x) for x in acts["layers"]]


def run_job(analysis: Analysis, job: Job, table_out: Path, array_outs: Mapping[str, Path]) -> None:
    """Run `analysis` on `job`; write its tidy table and each of its matrix files."""
    if set(array_outs) != set(analysis.arrays):
        raise ValueError(
            f"analysis {analysis.name!r} writes arrays {sorted(analysis.arrays)}, "
            f"got outputs for {sorted(array_outs)}"
        )
    result = analysis.run(job)
    for name, path in array_outs.items():
        io.save_npz(path, result.arrays[name])
    io.save_table(table_out, tables.frame(tidy(job.method, job.seed, result.rows)))


def tidy(method: str, seed: int, rows: Sequence[Row]) -> list[dict]:
    return [
        {
            "method": method,
            "seed": int(seed),
            "epoch": int(epoch),
            "layer": layer,
            "probe": probe,
            "metric": metric,
            "value": float(value),
        }
        for epoch, layer, probe, metric, value in rows
    ]


class PerCheckpointAnalysis(Analysis):
    """An analysis that measures each analysed checkpoint on its own (its weights, or the
    network built from them): `epoch(checkpoint)` gets the checkpoint's dict (`io.torch_load`,
    weights_only) and returns rows and arrays like `PerEpochAnalysis.epoch`; results are
    cached under the checkpoint file's digest and `cache_settings()`, and the array named
    `stacked` is stacked over epochs into the first of `arrays`. `chosen_epochs(job)` may
    restrict the epochs measured (default: every analysed epoch)."""

    stacked: ClassVar[str | None] = None

    def cache_settings(self) -> Any:
        return self.settings

    def chosen_epochs(self, job: Job) -> list[int]:
        return list(job.epochs)

    def epoch(self, checkpoint: dict) -> tuple[EpochRows, dict]:
        raise NotImplementedError

    def run(self, job: Job) -> Result:
        role = next(r for r, spec in self.inputs.items() if isinstance(spec, Checkpoints))
        folder = job.inputs[role]
        cache = EpochCache(job.cache_dir, self.name, log=job.log)
        results = []
        for path in layout.epoch_files(folder, self.chosen_epochs(job), ".pt"):
            key = make_key(self.name, checkpoint_digest(path, folder), self.cache_settings())
            hit = cache.load_result(key)
            if hit is None:
                rows, arrays = self.epoch(read_checkpoint(path, folder))
                cache.save_result(key, [list(r) for r in rows], arrays)
            else:
                rows, arrays = [tuple(r) for r in hit[0]], hit[1]
            job.log(f"{self.name} {path.name}: {'cached' if hit else f'{len(rows)} values'}")
            results.append(EpochResult(role, int(arrays["epoch"]), rows, arrays))
        out = Result([(r.epoch, *row) for r in results for row in r.rows])
        if self.stacked is not None and results:
            out.arrays[self.arrays[0]] = stack(results, self.stacked)
        return out


def checkpoint_digest(path: Path, folder: Path) -> str:
    if not path.is_file():
        error = io.ArtifactReadError(f"checkpoint {path} is missing", path, advice=False)
        raise error.remove_folder(folder)
    return file_digest(path)


def read_checkpoint(path: Path, folder: Path) -> dict:
    """A checkpoint (`io.torch_load`, verified, weights only). A damaged one also removes
    `folder`, the training output holding it, so that the workflow's next run restores it."""
    try:
        return io.torch_load(path)
    except io.ArtifactReadError as error:
        if error.removed:
            raise error.remove_folder(folder) from error.__cause__
        raise
