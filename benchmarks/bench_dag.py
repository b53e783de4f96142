"""How fast Snakemake plans a paper-scale study (issue: <= 30 s for 8 methods x 10 seeds x 200
epochs on a 2-core machine), against the same study planned with one job per epoch.

    python benchmarks/bench_dag.py [--seeds 10] [--epochs 200]

The baseline is a minimal Snakefile with the per-epoch granularity that ssltrace avoids
(pretrain per run; extract and five analyses per checkpoint), planned in the same run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PER_EPOCH_SNAKEFILE = """
M = {methods!r}
S = list(range({seeds}))
E = list(range({epochs} + 1))
A = ["fewshot", "clustering", "human", "trajectory", "geometry"]
wildcard_constraints:
    method="[a-z0-9_]+", seed=r"\\d+", epoch=r"\\d+", a="[a-z]+"
rule all:
    input: expand("tables/{{a}}.tsv", a=A)
rule pretrain:
    output: expand("runs/{{{{method}}}}/seed{{{{seed}}}}/epoch_{{e}}.pt", e=E)
    shell: "touch {{output}}"
rule extract:
    input: "runs/{{method}}/seed{{seed}}/epoch_{{epoch}}.pt"
    output: "act/{{method}}/seed{{seed}}/epoch_{{epoch}}.npz"
    shell: "touch {{output}}"
rule analysis:
    input: "act/{{method}}/seed{{seed}}/epoch_{{epoch}}.npz"
    output: "met/{{a}}/{{method}}/seed{{seed}}/epoch_{{epoch}}.tsv"
    shell: "touch {{output}}"
rule collect:
    input: expand("met/{{{{a}}}}/{{m}}/seed{{s}}/epoch_{{e}}.tsv", m=M, s=S, e=E)
    output: "tables/{{a}}.tsv"
    shell: "touch {{output}}"
"""


def plan(args: list[str], cwd: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "2", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"planning failed:\n{out[-3000:]}")
    total = re.search(r"^total\s+(\d+)", out, re.MULTILINE)
    return seconds, int(total.group(1)) if total else -1, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--skip-baseline", action="store_true")
    a = parser.parse_args()
    with open(ROOT / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = {
            "seeds": list(range(a.seeds)),
            "train": {"epochs": a.epochs},
            "results_dir": str(tmp / "results"),
        }
        (tmp / "study.yaml").write_text(yaml.safe_dump(study))
        seconds, jobs, out = plan(
            ["--snakefile", str(ROOT / "Snakefile"), "--configfile", str(tmp / "study.yaml")],
            ROOT,
        )
        n_methods = len(cfg["methods"])
        print(
            f"ssltrace: {n_methods} methods x {a.seeds} seeds x {a.epochs} epochs: "
            f"{jobs} jobs planned in {seconds:.1f} s"
        )
        for line in out.splitlines():
            if re.match(r"^\S+\s+\d+$", line.strip()) and not line.startswith("total"):
                print("   ", line.strip())
        if a.skip_baseline:
            return
        base = tmp / "per_epoch"
        base.mkdir()
        (base / "Snakefile").write_text(
            PER_EPOCH_SNAKEFILE.format(methods=cfg["methods"], seeds=a.seeds, epochs=a.epochs)
        )
        b_seconds, b_jobs, _ = plan([], base)
        print(f"per-epoch baseline: {b_jobs} jobs planned in {b_seconds:.1f} s")
        print(
            f"ratio: ssltrace plans {b_seconds / seconds:.1f}x faster with "
            f"{b_jobs / max(jobs, 1):.0f}x fewer jobs"
        )


if __name__ == "__main__":
    main()
