"""The command line's own behaviour: what `ssltrace list` shows, and what a job pays to start."""

from __future__ import annotations

import subprocess
import sys

ANALYSIS_NAMES = {"clustering", "fewshot", "geometry", "human", "trajectory"}


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_list_shows_every_analysis_of_the_package():
    out = subprocess.run(
        [sys.executable, "-m", "ssltrace.cli", "list"], capture_output=True, text=True, check=True
    ).stdout
    section = out.split("Analyses:\n", 1)[1].split("Figures:\n", 1)[0].splitlines()
    assert {line.split()[0] for line in section if line.strip()} == ANALYSIS_NAMES


def test_clustering_and_trajectory_stages_do_not_load_torch():
    # Importing torch costs ~3 s per job; these stages are numpy/scipy only.
    code = (
        "import sys\n"
        "from ssltrace import cli\n"
        "from ssltrace.analysis import analysis\n"
        "from ssltrace.analysis.base import run_job\n"
        "analysis('clustering'), analysis('trajectory')\n"
        "cli._threads(type('A', (), {'threads': 1})())\n"
        "print('torch' in sys.modules)\n"
    )
    assert _python(code).strip() == "False"


def test_threads_option_reaches_torch_loaded_afterwards():
    code = (
        "from ssltrace import cli\n"
        "cli._threads(type('A', (), {'threads': 1})())\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
    )
    assert _python(code).strip() == "1"
