"""Per-job overhead of running Snakemake jobs through SLURM, on this machine.

Starts a private single-node SLURM (scripts/slurm/start_local_slurm.sh, needs root), runs a chain
of trivial jobs (each waits for the previous one) locally and then through profiles/slurm, and
prints seconds per job, split into queue wait, time inside the job (the plugin starts Snakemake
twice per job: in the batch script and again under srun) and the delay until Snakemake notices
the job ended (status polling). Usage:
    python scripts/slurm/overhead.py [--jobs 4] [--init-seconds 2 40]
--init-seconds: values of --slurm-init-seconds-before-status-checks to compare (plugin default 40).
"""

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import slurm_harness  # noqa: E402

CHAIN = """
N = int(config["length"])
rule all:
    input: f"step{N - 1}.txt"
rule first:
    output: "step0.txt"
    resources: mem_mb=100, runtime=5
    shell: "date > {output}"
rule step:
    input: lambda w: f"step{int(w.i) - 1}.txt"
    output: "step{i,[1-9][0-9]*}.txt"
    resources: mem_mb=100, runtime=5
    shell: "date > {output}"
"""


def run_chain(work: Path, n: int, extra: list[str], env: dict[str, str]) -> tuple[float, str]:
    work.mkdir(parents=True)
    (work / "Snakefile").write_text(CHAIN)
    args = ["--snakefile", str(work / "Snakefile"), "--directory", str(work)]
    args += ["--config", f"length={n}", *extra]
    started = time.monotonic()
    code, output = slurm_harness.run_snakemake(args, env, work / "snakemake.log", 1800)
    if code != 0:
        raise SystemExit(f"snakemake failed ({code}):\n{output[-3000:]}")
    return time.monotonic() - started, output


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="length of the job chain")
    parser.add_argument("--init-seconds", type=int, nargs="+", default=[2, 40])
    opts = parser.parse_args()
    if opts.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {opts.jobs}")
    reason = slurm_harness.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot start a local SLURM: {reason}")

    with tempfile.TemporaryDirectory(prefix="slurm-overhead-") as tmp:
        tmp = Path(tmp)
        cluster = slurm_harness.LocalSlurm(tmp / "cluster")
        cluster.start()
        try:
            env = {k: v for k, v in cluster.env().items() if not k.startswith("SSLTRACE_")}
            local, _ = run_chain(tmp / "local", opts.jobs, ["--cores", "1"], env)
            print(f"chain of {opts.jobs} trivial jobs, local --cores 1: {local:.1f} s (baseline)")
            for init in opts.init_seconds:
                extra = ["--profile", str(ROOT / "profiles" / "slurm")]
                extra += ["--slurm-status-command", "squeue"]
                extra += ["--slurm-init-seconds-before-status-checks", str(init)]
                wall, output = run_chain(tmp / f"slurm{init}", opts.jobs, extra, env)
                report(cluster, output, opts.jobs, wall, local, init)
        finally:
            cluster.stop()


def report(cluster, output, n, wall, local, init):
    ids = [i for ids in slurm_harness.submitted_jobs(output).values() for i in ids]
    jobs = [cluster.job(i) for i in ids]
    queued = [seconds(j["StartTime"]) - seconds(j["SubmitTime"]) for j in jobs]
    inside = [seconds(j["EndTime"]) - seconds(j["StartTime"]) for j in jobs]
    per_job = (wall - local) / n
    print(
        f"through SLURM, init-seconds-before-status-checks={init}: {wall:.1f} s = "
        f"{wall / local:.1f} x local; overhead {per_job:.1f} s per job "
        f"(queue {sum(queued) / n:.1f} s, inside the job {sum(inside) / n:.1f} s, "
        f"noticing the end {per_job - (sum(queued) + sum(inside)) / n:.1f} s)"
    )


if __name__ == "__main__":
    main()
