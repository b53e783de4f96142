"""The smallest study that runs every stage (1 method, 1 seed, 2 epochs, width 0.125), and a
Snakemake runner for it, shared by the kill, determinism and security tests.

`reference()` runs it once per test run (tests/shared.py: shared by the xdist workers); the
tests that need a complete uninterrupted study compare against it instead of running their own.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ssltrace import config as sslconfig
from tests import conftest, killpoints, shared
from tests.conftest import ROOT

TINY = {
    "results_dir": "results",
    "dataset": {"options": {"train_per_class": 8}},
    "seeds": [0],
    "methods": ["simclr"],
    "train": {"batch_size": 32, "device": "cpu"},
    "probes": {"known": {"train_per_class": 4}},
    "geometry": {"probes": ["svm"]},
    "clustering": {"permutations": 20},
    "human_alignment": {"permutations": 20},
    "figures": {"formats": ["png", "pdf"], "dpi": 50},
}
ANALYSES = ("fewshot", "clustering", "human", "trajectory", "geometry")
ANALYSES += ("neighbours", "orientation", "mds", "filters", "stimuli", "transfer")  # seed 003
TABLES = [f"results/tables/{name}.tsv" for name in ANALYSES]
FIG5_STEM = "results/figures/seed000/fig05_fewshot_error_vs_layer"
FIG5 = [f"{FIG5_STEM}.{fmt}" for fmt in ("png", "pdf")]
RUN = "results/runs/simclr/seed0"


def tiny_config(**top_level) -> dict:
    """config.yaml + presets/ci.yaml + TINY (+ top-level overrides), as one mapping."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for extra in (yaml.safe_load((ROOT / "presets/ci.yaml").read_text()), TINY, top_level):
        cfg = sslconfig.deep_merge(cfg, extra)
    return cfg


def make_workdir(workdir: Path, **top_level) -> Path:
    """A working directory whose config.yaml is the tiny study (read by the Snakefile)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config(**top_level)))
    return workdir


def snakemake(workdir: Path, *args: str, env: dict | None = None, check: bool = True):
    """Run Snakemake in its own session, so a hook may SIGKILL its whole process group."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return conftest.snakemake(
        workdir, *args, check=check, cwd=workdir, env=full_env, start_new_session=True
    )


def hooked_env(workdir: Path, **kill) -> dict:
    """Environment that routes jobs through the kill/rename hooks of tests/killpoints.py."""
    env = {
        "PATH": f"{killpoints.wrapper_dir(workdir.parent / (workdir.name + '_hooks'))}"
        f"{os.pathsep}{os.environ['PATH']}",
        killpoints.LOG_ENV: str(workdir.parent / f"{workdir.name}_renames.jsonl"),
    }
    if kill:
        env.update(killpoints.kill_env(**kill))
    return env


def temp_leftovers(results: Path) -> list[Path]:
    """Temp files of ssltrace.io writers (".<name>.XXXXXXXX.tmp...") or downloads (.part)."""
    return [p for p in results.rglob("*") if ".tmp" in p.name or p.name.endswith(".part")]


def reference() -> Path:
    """An uninterrupted tiny study: all five tables and figure 5, every rename recorded
    (built once per test run, tests/shared.py)."""

    def build(work: Path) -> None:
        _forget_records(work)
        make_workdir(work)
        snakemake(work, *TABLES, *FIG5, env=hooked_env(work))

    return shared.build_once("reference", build)


def _forget_records(work: Path) -> None:
    """Remove what an earlier, failed build of `work` recorded beside it."""
    for suffix in ("_renames.jsonl", "_argv.jsonl"):
        (work.parent / f"{work.name}{suffix}").unlink(missing_ok=True)


def renames_of(workdir: Path) -> list[dict]:
    return _jsonl(workdir.parent / f"{workdir.name}_renames.jsonl")


def _jsonl(path: Path) -> list:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# Every shell metacharacter that could start a command, plus a space, quotes and a newline.
# Braces are left out: Snakemake reads them as wildcards (the config should reject them).
HOSTILE = (
    "r e's\"$(touch PWNED1)`touch PWNED2`;touch PWNED3;\nx&&touch PWNED4|touch PWNED5 <>*?!#~%\\"
)


def hostile() -> tuple[Path, Path]:
    """The tiny study (tables and figure 5) with results_dir and data_dir under a directory
    named HOSTILE, on one core (the reference has two: the tables must not depend on --cores);
    returns (workdir, results_dir). Each job's argv is recorded."""

    def build(work: Path) -> None:
        _forget_records(work)
        results = work / HOSTILE / "results"
        make_workdir(work, results_dir=str(results), data_dir=str(work / HOSTILE / "data dir"))
        env = {**hooked_env(work), killpoints.ARGV_ENV: str(work.parent / "hostile_argv.jsonl")}
        targets = [str(results / name.removeprefix("results/")) for name in (*TABLES, *FIG5)]
        # Snakemake keeps the last --cores: the training job is granted 1 thread, not 2.
        snakemake(work, *targets, "--cores", "1", env=env)

    work = shared.build_once("hostile", build)
    return work, work / HOSTILE / "results"


def argv_of_hostile() -> list[list[str]]:
    return _jsonl(shared.run_dir() / "hostile_argv.jsonl")
