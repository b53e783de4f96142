"""The command line's own behaviour: what `ssltrace list` shows, and what a job pays to start."""

from __future__ import annotations

import subprocess
import sys

ANALYSIS_NAMES = {"clustering", "fewshot", "geometry", "human", "trajectory"}
ANALYSIS_NAMES |= {"compression", "umap", "random_targets"}  # seed 004 (issue 18)
ANALYSIS_NAMES |= {"predictivity", "behaviour"}  # seed 003 (issue 17)
ANALYSIS_NAMES |= {"neighbours", "orientation", "mds", "filters", "stimuli", "transfer"}  # seed 003


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


def test_a_stage_dies_with_the_shell_that_started_it(tmp_path):
    # bash -> python (the CLI's start-up, then a long wait); SIGKILL on bash must end python.
    import os
    import signal
    import time

    pid_file = tmp_path / "pid"
    code = (
        "import os, time\n"
        "from ssltrace import cli\n"
        "cli.die_with_parent()\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    shell = subprocess.Popen(["bash", "-c", f"{sys.executable} -c \"$CODE\"; true"],
                             env={**os.environ, "CODE": code})  # fmt: skip
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    shell.send_signal(signal.SIGKILL)
    shell.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
        if open(f"/proc/{child}/stat").read().split()[2] == "Z":
            break  # ended; a zombie until init reaps it
        time.sleep(0.1)
    alive = (
        os.path.exists(f"/proc/{child}") and open(f"/proc/{child}/stat").read().split()[2] != "Z"
    )
    assert not alive, "the stage outlived the shell of its job"


def test_main_asks_to_die_with_its_parent(monkeypatch):
    from ssltrace import cli

    calls = []
    monkeypatch.setattr(cli, "die_with_parent", lambda: calls.append(1))
    assert cli.main(["list"]) == 0 and calls == [1]
