"""DDP scaling on the CPU (gloo): images/s of one run trained by 1 and by 2 processes.

The same run (SimCLR, resnet18 at `--width`, global batch `--batch`) is trained through the
CLI, once as one process and once under `torchrun --nproc-per-node 2`, each process on
`--threads` torch threads, so 2 processes use twice the cores. The rate is train_log's
images_per_s (global batch images per second) of the best epoch after the first (warm-up).
Scaling efficiency = rate(2) / (2 rate(1)); 1.0 is perfect scaling. On a machine whose cores
are shared with other work the figure is a sanity check, not a measurement of gloo.

    python benchmarks/bench_ddp.py [--images 512] [--batch 64] [--epochs 3] [--width 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ssltrace.config import defaults
from ssltrace.io import save_npz, write_json


def write_data(root: Path, n_images: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    save_npz(
        root / "data.npz",
        {
            "train_images": rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8),
            "train_fine": np.arange(n_images, dtype=np.int64) % 2,
            "test_images": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
            "test_fine": np.arange(2, dtype=np.int64),
        },
    )
    write_json(root / "split.json", {"seed": 0, "known_fine": [0], "novel_fine": [1]})
    return root / "data.npz", root / "split.json"


def run_settings(args, processes: int) -> dict:
    train = {
        **defaults()["train"],
        "epochs": args.epochs,
        "batch_size": args.batch,
        "schedule": {"name": "constant", "warmup_epochs": 0},
        "device": "cpu",
        "threads": args.threads,
        "processes": processes,
    }
    return {
        "method": "simclr",
        "seed": 0,
        "method_params": {},
        "architecture": {"name": "resnet18", "width": args.width},
        "train": train,
        "augment": {"preset": "seed000"},
    }


def images_per_s(args, data, out: Path, processes: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    launch = [sys.executable, "-m", "ssltrace.cli"]
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launch += ["--nproc-per-node", str(processes), "-m", "ssltrace.cli"]
    cmd = [*launch, "pretrain", "--dataset", str(data[0]), "--split", str(data[1])]
    cmd += ["--out-dir", str(out), "--threads", str(args.threads)]
    cmd += ["--settings", json.dumps(run_settings(args, processes))]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    log = pd.read_csv(out / "train_log.tsv", sep="\t")
    return float(log["images_per_s"].iloc[1:].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), args.images)
        rates = {n: images_per_s(args, data, Path(tmp) / f"run{n}", n) for n in (1, 2)}
    print(f"cpu, gloo, {args.threads} thread(s) per process, global batch {args.batch}")
    for n, rate in rates.items():
        print(f"  {n} process{'es' if n > 1 else ''}: {rate:8.1f} images/s")
    ratio = rates[2] / rates[1]
    print(f"  2 / 1 processes: x{ratio:.2f} (scaling efficiency {ratio / 2:.0%})")


if __name__ == "__main__":
    main()
