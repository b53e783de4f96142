import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import shared

ROOT = Path(__file__).resolve().parents[1]
# The real CIFAR-10H files (not in the repository: CC BY-NC-SA); their tests skip without them.
SHARED_DATA = Path(os.environ.get("SSLTRACE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Two cores are shared by pytest and the torch work it triggers; more threads only thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ssltrace.cli.main


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controlling process: name the run
        shared.start_run()


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        shared.remove_run_dir()


# Modules whose tests need the tiny reference study (tests/tiny_study.py).
TINY_STUDY_MODULES = {"test_kill", "test_determinism", "test_security", "test_reliability"}


def pytest_collection_modifyitems(items):
    """Tests of the ci study first and those of the tiny studies from the middle on: with
    `--dist worksteal` each worker starts on its half of this order, so the two workers begin
    by building different studies (tests/shared.py) instead of one waiting for the other."""
    ci = [i for i in items if "ci_study" in i.fixturenames]
    tiny = [i for i in items if i.module.__name__.rsplit(".", 1)[-1] in TINY_STUDY_MODULES]
    rest = [i for i in items if i not in ci and i not in tiny]
    half = max(0, len(items) // 2 - len(ci))
    items[:] = ci + rest[:half] + tiny + rest[half:]


@pytest.fixture
def root() -> Path:
    return ROOT


def snakemake(
    workdir: Path, *args: str, options: tuple[str, ...] = (), check: bool = True, **run
) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in `workdir` on 2 cores (`run` goes to subprocess.run).

    `options` come before --cores: --configfile takes every word up to the next option, so
    it must not be followed by targets."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        *options,
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, **run)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def run_snakemake(
    workdir: Path,
    *args: str,
    preset: Path | None = None,
    config: tuple[str, ...] = (),
    check: bool = True,
):
    """Run the real workflow in `workdir` (results under workdir/results) on 2 cores.

    `config` holds extra KEY=VALUE overrides (Snakemake keeps only the last --config flag, so
    they are merged here with results_dir).
    """
    if not (workdir / "config.yaml").exists():
        shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    preset_option = ("--configfile", str(preset or ROOT / "presets/ci.yaml"))
    overrides = ("--config", f"results_dir={workdir / 'results'}", *config)
    return snakemake(workdir, *args, *overrides, options=preset_option, check=check, cwd=ROOT)


@pytest.fixture(scope="session")
def ci_study():
    """The smallest full study (presets/ci.yaml), run once per test run (tests/shared.py).

    Tests may read it and dry-run against it; a test that changes files must copy it first.
    """
    from ssltrace import study

    work = shared.build_once("ci_study", run_snakemake)
    cfg = study.load(ROOT / "config.yaml", ROOT / "presets/ci.yaml")
    cfg["results_dir"] = str(work / "results")
    return ROOT, work, cfg
