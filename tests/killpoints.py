"""Deterministic SIGKILLs inside workflow jobs, and a record of every rename they make.

`wrapper_dir(tmp)` writes an `ssltrace` executable that installs these hooks and then runs the
real `ssltrace.cli.main`; put the directory first on PATH and every job Snakemake starts goes
through it. The hooks are driven by environment variables, so one Snakemake call can be told
to die at an exact point (no sleeps, no polling):

- SSLTRACE_KILL = JSON {"at": "before-replace" | "after-replace" | "step",
  "match": fnmatch pattern of the absolute destination path (or [epoch, step] for "step"),
  "count": the n-th match in this process (default 1),
  "scope": "job" (this process) | "group" (its process group: Snakemake and every job) |
  "shell" (the shell of the job, which runs this process; this process must then die of its
  parent-death signal) | "snakemake" (Snakemake alone; the job runs on, orphaned) |
  "shell+snakemake" (both: this process must die of its parent-death signal)}
- SSLTRACE_SURVIVED = a file; a job whose shell was killed and that is still alive after
  SURVIVAL_S seconds appends a line to it (and goes on), so a test can assert that none did.
- SSLTRACE_REPLACE_LOG = a file; each os.replace appends one JSON line {"src", "dst"}.
- SSLTRACE_ARGV_LOG = a file; each `ssltrace` process appends its argv as one JSON line (what
  the job's shell line turned into after quoting).

"step" uses the training engine's own hook (`Trainer.fit(on_step)`), called after every
optimiser step.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import sys
import time
from pathlib import Path

KILL_ENV = "SSLTRACE_KILL"
LOG_ENV = "SSLTRACE_REPLACE_LOG"
ARGV_ENV = "SSLTRACE_ARGV_LOG"


def kill_env(at: str, match, count: int = 1, scope: str = "group") -> dict[str, str]:
    return {KILL_ENV: json.dumps({"at": at, "match": match, "count": count, "scope": scope})}


SURVIVED_ENV = "SSLTRACE_SURVIVED"
SURVIVAL_S = 20


def _die(scope: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    # Only a group that leads its own session (Snakemake started with start_new_session) is
    # killed whole, and only its leader is taken for Snakemake: never the test runner.
    own_session = os.getpgid(0) == os.getsid(0) != os.getpid()
    if scope == "group" and own_session:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    if scope in ("snakemake", "shell+snakemake") and own_session:
        os.kill(os.getsid(0), signal.SIGKILL)
    if scope == "snakemake":
        return  # the job runs on without the Snakemake that started it
    if scope in ("shell", "shell+snakemake"):
        parent = os.getppid()
        os.kill(parent, signal.SIGKILL)
        time.sleep(SURVIVAL_S)  # the parent-death signal ends this process within this sleep
        if os.environ.get(SURVIVED_ENV):
            with open(os.environ[SURVIVED_ENV], "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "parent": parent}) + "\n")
        return
    os.kill(os.getpid(), signal.SIGKILL)


def install() -> None:
    if os.environ.get(ARGV_ENV):
        with open(os.environ[ARGV_ENV], "a") as fh:
            fh.write(json.dumps(sys.argv[1:]) + "\n")
    spec = json.loads(os.environ.get(KILL_ENV) or "null")
    log_path = os.environ.get(LOG_ENV)
    if spec is None and not log_path:
        return
    if spec is not None and spec["at"] == "step":
        _install_step_kill(spec)
    _install_replace_hook(spec if spec and spec["at"] != "step" else None, log_path)


def _install_replace_hook(spec: dict | None, log_path: str | None) -> None:
    real_replace = os.replace
    seen = [0]

    def replace(src, dst, *args, **kwargs):
        target = os.path.abspath(dst)  # jobs name their outputs relative to the workdir
        hit = spec is not None and fnmatch.fnmatchcase(target, spec["match"])
        if hit:
            seen[0] += 1
            hit = seen[0] == spec.get("count", 1)
        if hit and spec["at"] == "before-replace":
            _die(spec["scope"])
        real_replace(src, dst, *args, **kwargs)
        if log_path:
            with open(log_path, "a") as fh:
                record = {"src": os.path.abspath(src), "dst": target}
                fh.write(json.dumps(record) + "\n")
        if hit:
            _die(spec["scope"])

    os.replace = replace


def _install_step_kill(spec: dict) -> None:
    from ssltrace.training import engine

    real_fit = engine.Trainer.fit
    target = tuple(spec["match"])

    def fit(self, on_step=None):
        def step(epoch, index):
            if on_step is not None:
                on_step(epoch, index)
            if (epoch, index) == target:
                _die(spec["scope"])

        return real_fit(self, step)

    engine.Trainer.fit = fit


# Guarded: a fork server (the image-folder loader's workers) imports the main module again.
WRAPPER = """#!{python}
import sys
sys.path.insert(0, {tests!r})
import killpoints
if __name__ == "__main__":
    killpoints.install()
    from ssltrace.cli import main
    sys.exit(main())
"""


def wrapper_dir(tmp: Path) -> Path:
    """A directory holding an `ssltrace` executable that runs the CLI with these hooks."""
    folder = Path(tmp) / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "ssltrace"
    exe.write_text(WRAPPER.format(python=sys.executable, tests=str(Path(__file__).parent)))
    exe.chmod(0o755)
    return folder
