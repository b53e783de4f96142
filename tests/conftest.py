import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Two cores are shared by pytest and the torch work it triggers; more threads only thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ssltrace.cli.main


@pytest.fixture
def root() -> Path:
    return ROOT


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
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(preset or ROOT / "presets/ci.yaml"),
        "--cores",
        "2",
        *args,
        "--config",
        f"results_dir={workdir / 'results'}",
        *config,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def ci_study(tmp_path_factory):
    """The smallest full study (presets/ci.yaml), run once per test session.

    Tests may read it and dry-run against it; a test that changes files must copy it first.
    """
    from ssltrace import config as sslconfig

    work = tmp_path_factory.mktemp("ci_study")
    run_snakemake(work)
    cfg = sslconfig.load(ROOT / "config.yaml", ROOT / "presets/ci.yaml")
    cfg["results_dir"] = str(work / "results")
    return ROOT, work, cfg
