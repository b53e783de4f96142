"""Interrupting a multi-process (torchrun) run from outside, at an exact point.

tests/killpoints.py kills from inside one process; a torchrun run is killed the way a user or
a cluster does it, from outside: each rank pauses at a named point (after an optimiser step,
or before a file is renamed into place), says so with a marker file, and sleeps until the
test has sent its signal. Every process of the run carries TAG_ENV in its environment (the
ranks, their DataLoader fork server and workers inherit it), so `tagged` finds whatever a
kill left alive.

- `wrapper_dir(tmp)` writes `ssltrace-paused` (the CLI behind the pause hook, an entry for
  torchrun) and a `torchrun` that starts the real one with that entry in place of
  `-m ssltrace.cli` (put the directory first on PATH and the workflow's pretrain job uses it);
  it execs, so the job's process is torchrun as without it.
- PAUSE_ENV = JSON {"at": "step" | "before-replace", "match": [epoch, step] | fnmatch pattern
  of the destination, "rank": the rank that pauses (default: every rank), "marker": folder}.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import signal
import sys
import time
from pathlib import Path

PAUSE_ENV = "SSLTRACE_PAUSE"
TAG_ENV = "SSLTRACE_TEST_TAG"
PAUSE_S = 600  # a paused rank sleeps this long: far longer than any test waits for it


def pause_env(marker: Path, at: str, match, rank: int | None = None) -> dict[str, str]:
    spec = {"at": at, "match": match, "rank": rank, "marker": str(marker)}
    return {PAUSE_ENV: json.dumps(spec)}


def _pause(spec: dict) -> None:
    rank = os.environ.get("RANK", "0")
    folder = Path(spec["marker"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank{rank}").write_text(str(os.getpid()))
    time.sleep(PAUSE_S)


def install() -> None:
    """The pause hook of PAUSE_ENV in this process (a rank), if it names this rank."""
    spec = json.loads(os.environ.get(PAUSE_ENV) or "null")
    if spec is None or spec["rank"] not in (None, int(os.environ.get("RANK", "0"))):
        return
    if spec["at"] == "step":
        from ssltrace.training import engine

        real_fit, target = engine.Trainer.fit, tuple(spec["match"])

        def fit(self, on_step=None):
            def step(epoch, index):
                if on_step is not None:
                    on_step(epoch, index)
                if (epoch, index) == target:
                    _pause(spec)

            return real_fit(self, step)

        engine.Trainer.fit = fit
        return
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatchcase(os.path.abspath(dst), spec["match"]):
            _pause(spec)
        real_replace(src, dst, *args, **kwargs)

    os.replace = replace


# Guarded: a DataLoader fork server imports the main module of its rank (as __mp_main__), and
# unguarded it would start a second trainer there.
ENTRY = """#!{python}
import sys
if __name__ == "__main__":
    sys.path.insert(0, {tests!r})
    import ddp_kill
    ddp_kill.install()
    from ssltrace.cli import main
    sys.exit(main())
"""

TORCHRUN = """#!{python}
import os, sys
args = sys.argv[1:]
i = args.index("-m")  # `-m ssltrace.cli`: the entry of the ranks
args[i : i + 2] = [{entry!r}]
os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", *args])
"""


def wrapper_dir(tmp: Path) -> Path:
    """A folder with `ssltrace-paused` and a `torchrun` that starts the ranks through it."""
    folder = Path(tmp) / "ddp_bin"
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / "ssltrace-paused"
    entry.write_text(ENTRY.format(python=sys.executable, tests=str(Path(__file__).parent)))
    torchrun = folder / "torchrun"
    torchrun.write_text(TORCHRUN.format(python=sys.executable, entry=str(entry)))
    for exe in (entry, torchrun):
        exe.chmod(0o755)
    return folder


def wait_for_markers(marker: Path, ranks: int, proc, timeout: float = 600.0) -> None:
    """Wait until `ranks` ranks have paused (fails early when `proc`, the launcher, ended)."""
    deadline = time.monotonic() + timeout
    while len(list(Path(marker).glob("rank*"))) < ranks:
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before it paused"
        assert time.monotonic() < deadline, "the run never reached its pause point"
        time.sleep(0.2)


def _environ(pid: str) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        return fh.read()


def _alive(pid: str) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead


def tagged(tag: str) -> list[int]:
    """Every live process whose environment holds TAG_ENV=tag (Linux /proc)."""
    wanted = f"{TAG_ENV}={tag}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if wanted in _environ(pid).split(b"\0") and _alive(pid):
                found.append(int(pid))
        except OSError:  # gone, or not ours to read
            continue
    return found


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            words = fh.read().split(b"\0")
        return f"{pid}: {b' '.join(words).decode(errors='replace')[:200]}"
    except OSError:
        return str(pid)


def survivors(tag: str, within: float) -> list[str]:
    """The processes of `tag` still alive after `within` seconds (none: an empty list); any
    found then are killed, so that a failing test leaves no trainer behind."""
    deadline = time.monotonic() + within
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = [_describe(pid) for pid in left]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return described
