"""A real single-node SLURM on localhost for tests: install, start, inspect jobs, stop.

The daemons are started by scripts/slurm/start_local_slurm.sh with their state under a test
directory and on free ports, so they run beside any other SLURM. One thing is global: the
slurm-jobstep plugin strips SLURM_CONF before the srun it runs inside each job, so the config
must be linked at /etc/slurm/slurm.conf. A file lock keeps concurrent test sessions from
fighting over that link.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "slurm"
PACKAGES = ("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged")
LOCK_FILE = Path("/tmp/ssltrace-slurm-test.lock")
ETC_CONF = Path("/etc/slurm/slurm.conf")

_SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*?/(?:rule|group)_(\w+)/")


def unavailable_reason() -> str | None:
    """None if a local SLURM can run here (installing the packages if needed), else why not."""
    if sys.platform != "linux":
        return f"a local SLURM needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return f"starting slurmd/slurmctld needs root (tests run as uid {os.geteuid()})"
    if ETC_CONF.exists() and not ETC_CONF.is_symlink():
        return f"a real SLURM config exists at {ETC_CONF}; the test cluster will not replace it"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        reason = _apt_install()
        if reason:
            return f"SLURM binaries {missing} missing and not installable: {reason}"
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            return f"apt-get installed {PACKAGES} but {missing} are still missing"
    return None


def _apt_install() -> str | None:
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalSlurm:
    """One node (this host) with fake GPUs of type `gpu_type` and partitions `debug`, `gpu`."""

    base: Path
    gpu_type: str = "testgpu"
    fake_gpus: int = 1
    ports: tuple[int, int] = field(default_factory=lambda: (free_port(), free_port()))
    _lock: object = None

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    def env(self) -> dict[str, str]:
        """The caller's environment without SLURM job variables, pointed at this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def start(self, lock_timeout_s: float = 900) -> str:
        self._lock = _acquire(LOCK_FILE, lock_timeout_s)
        env = {
            **self.env(),
            "SLURM_BASE": str(self.base),
            "SLURM_CTLD_PORT": str(self.ports[0]),
            "SLURMD_PORT": str(self.ports[1]),
            "SLURM_FAKE_GPUS": str(self.fake_gpus),
            "SLURM_FAKE_GPU_TYPE": self.gpu_type,
        }
        script = SCRIPTS / "start_local_slurm.sh"
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            logs = "\n".join(_tail(p) for p in sorted((self.base / "log").glob("*.log")))
            self.stop()
            raise RuntimeError(f"{script} failed:\n{proc.stdout}{proc.stderr}\n{logs}")
        return proc.stdout

    def stop(self) -> str:
        script = SCRIPTS / "stop_local_slurm.sh"
        env = {**self.env(), "SLURM_BASE": str(self.base)}
        try:
            proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
            return proc.stdout + proc.stderr
        finally:
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None

    def job(self, jobid: str) -> dict[str, str]:
        """`scontrol show job` as a dict (finished jobs stay visible for MinJobAge=300 s)."""
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", jobid],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # one line of `Key=Value` pairs (keys such as AllocNode:Sid or Socks/Node included);
        # a value ends where the next ` Key=` starts
        key = r"[A-Za-z][\w:/]*"
        pairs = re.findall(rf"(?:^|\s)({key})=(.*?)(?=\s{key}=|\s*$)", out.strip())
        return dict(pairs)


def _acquire(path: Path, timeout_s: float):
    handle = open(path, "a")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise TimeoutError(
                    f"another test session held {path} (the local SLURM) for {timeout_s:.0f} s"
                ) from None
            time.sleep(2)


def _tail(path: Path, chars: int = 2000) -> str:
    return f"--- {path}\n{path.read_text(errors='replace')[-chars:]}"


def submitted_jobs(snakemake_output: str) -> dict[str, list[str]]:
    """Rule name -> SLURM job ids, in submission order, from Snakemake's log."""
    jobs: dict[str, list[str]] = {}
    for jobid, rule in _SUBMITTED.findall(snakemake_output):
        jobs.setdefault(rule, []).append(jobid)
    return jobs


def run_snakemake(args: list[str], env: dict[str, str], log: Path, timeout_s: float):
    """Run Snakemake to completion; on timeout stop it with SIGINT (SIGTERM does not end the
    SLURM executor's polling loop), then SIGKILL. Returns (returncode, output)."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = None
    return code, log.read_text(errors="replace")
