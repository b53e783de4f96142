"""Training throughput per method, against two baselines measured in the same run.

For each method, `ssltrace.training.train_run` trains on a synthetic dataset; seconds and
images/s come from its train_log.tsv. Every pipeline runs `--epochs` epochs, the first is a
warm-up, and the best later epoch is reported. For the ratios, SimCLR's engine, the ceiling and
the DataLoader are measured in `--rounds` interleaved rounds and each keeps its best, so a load
change on a shared machine hits all three alike. Two SimCLR baselines use the
same network, optimiser, precision and memory format:

- ceiling: a bare forward + backward + step loop on pre-made view tensors (no data work);
- dataloader: torchvision transforms on PIL images through Dataset + DataLoader, per sample,
  as solo-learn and lightly do (RandomResizedCrop, flip, ColorJitter, grayscale: seed000).

Ratios > 1 against the dataloader and close to 1 against the ceiling are what the batched
on-device pipeline is for.

Methods with a per-epoch step before the batches (`before_epoch`: the k-means clusterings of
Local Aggregation and DeepCluster, LLP's label propagation) also print that step's seconds and
its share of the reported epoch (issue 15's target at CIFAR-100 scale on a GPU: <= 25 %).
CPU, 1,536 images, width 0.125, batch 128, 1 thread (2-core AMD EPYC shared by 6 agents,
2026-12-07): DeepCluster 0.90 s of 3.43 s/epoch (26 %: embedding every image, PCA-whitening,
k-means), Local Aggregation 0.07 s of 2.97 s (2.5 %: 10 k-means of the bank); at 384 images
24 % and 2.9 %.

CPU (default, < 2 min):   python benchmarks/bench_train.py
Seed 003's semi-supervised methods train with 10 % labels (`labels: {fraction: 0.1}`), depth
prediction on the smooth random depth maps of the benchmark set:
    python benchmarks/bench_train.py --methods few_label,mean_teacher,local_label_propagation,\
        depth_prediction --rounds 1
GPU, full size (H100 target <= 2 s/epoch for SimCLR):
    python benchmarks/bench_train.py --device cuda --width 1 --n-images 50000 \
        --batch-size 512 --epochs 3 --methods simclr [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ssltrace.augment import AugmentConfig
from ssltrace.config import defaults
from ssltrace.io import save_npz, write_json
from ssltrace.methods import METHODS, Method, build_method
from ssltrace.models import build_backbone
from ssltrace.training import build_optimizer, train_run
from ssltrace.training.engine import amp_dtype, resolve_device

OPTIMIZER = {"name": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4}
# LLP propagates labels and LA clusters its bank from their second epoch (the timed one),
# not after 10 IR epochs (an IR epoch has no clustering step to time).
PARAMS = {
    "moco_v2": {"queue_size": 4096},
    "local_label_propagation": {"ir_epochs": 1},
    "local_aggregation": {"ir_epochs": 1},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    trainable = [m for m in METHODS.names() if METHODS.get(m).trains]
    parser.add_argument("--methods", default=",".join(trainable), help="comma-separated")
    parser.add_argument("--epochs", type=int, default=2, help="first = warm-up; best reported")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds for ratios")
    parser.add_argument("--n-images", type=int, default=384)
    parser.add_argument("--width", type=float, default=0.125, help="resnet18 width")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 on CPU, so shared machines give stable figures)",
    )
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    return parser.parse_args()


def make_dataset(root: Path, n_images: int) -> tuple[Path, Path]:
    """Smooth random images (not white noise, so crops and jitter do real work)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (n_images, 8, 8, 3)).astype(np.uint8)
    images = coarse.repeat(4, axis=1).repeat(4, axis=2)
    depth = rng.uniform(1, 8, (n_images, 8, 8)).repeat(4, axis=1).repeat(4, axis=2)
    save_npz(
        root / "bench.npz",
        {
            "train_images": images,
            "train_fine": np.arange(n_images, dtype=np.int64) % 10,
            "train_depth": depth.astype(np.float16),  # for depth_prediction
        },
    )
    write_json(root / "split.json", {"known_fine": list(range(10))})
    return root / "bench.npz", root / "split.json"


def engine_run(method, args, dataset, split, out: Path) -> dict:
    run = {
        "method": method,
        "seed": 0,
        "method_params": PARAMS.get(method, {}),
        "architecture": {"name": "resnet18", "width": args.width},
        "train": {
            **defaults()["train"],
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": OPTIMIZER,
            "schedule": {"name": "constant"},
            "device": args.device,
            "compile": args.compile,
            "threads": args.threads,
        },
        "augment": {"preset": "seed000"},
    }
    if METHODS.get(method).label_subset:  # seed 003's semi-supervised setting: 10 % labels
        run["labels"] = {"fraction": 0.1, "seed": 0}
    train_run(run, dataset, split, out, log=lambda line: None)
    log = pd.read_csv(out / "train_log.tsv", sep="\t")
    best = log.iloc[1:]["seconds"].idxmin() if len(log) > 1 else 0
    return {
        "epoch": int(log.loc[best, "epoch"]),
        "s_per_epoch": float(log.loc[best, "seconds"]),
        "images_per_s": float(log.loc[best, "images_per_s"]),
    }


def simclr_step_fn(args, device):
    """One training step of the engine's SimCLR (same network, optimiser, AMP, memory format)."""
    torch.manual_seed(0)
    method = build_method("simclr", build_backbone("resnet18", width=args.width), {}, 10)
    method.to(device).to(memory_format=torch.channels_last)
    if args.compile:
        method.backbone.compile()
    optimizer = build_optimizer(method, OPTIMIZER, device)
    dtype = amp_dtype("auto", device)

    def step(views):
        views = [v.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                 for v in views]  # fmt: skip
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = method.loss(views, None)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_epoch(run_epoch, epochs: int, device) -> float:
    """Best images/s over epochs 2..epochs of `run_epoch() -> images` (epoch 1 warms up)."""
    rates = []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        n_images = run_epoch()
        sync(device)
        rates.append(n_images / (time.perf_counter() - start))
    return max(rates[1:]) if len(rates) > 1 else rates[0]


def ceiling(args, device, steps: int) -> float:
    """images/s of forward+backward+step on pre-made normalised views."""
    step = simclr_step_fn(args, device)
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device) for _ in range(2)]

    def epoch():
        for _ in range(steps):
            step(views)
        return steps * args.batch_size

    return best_epoch(epoch, args.epochs, device)


class TwoViewDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return self.transform(image), self.transform(image)


def dataloader_pipeline(args, device, dataset: Path) -> float:
    """images/s of per-sample torchvision transforms in a DataLoader + the same step."""
    import torchvision.transforms as T

    config = AugmentConfig.from_dict({"preset": "seed000"})
    transform = T.Compose(
        [
            T.RandomResizedCrop(32, scale=config.crop_scale, ratio=config.crop_ratio),
            T.RandomHorizontalFlip(config.flip_p),
            T.RandomApply(
                [T.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue)],
                p=config.jitter_p,
            ),
            T.RandomGrayscale(config.grayscale_p),
            T.ToTensor(),
            T.Normalize(config.mean, config.std),
        ]
    )
    with np.load(dataset) as data:
        images = data["train_images"]
    loader = torch.utils.data.DataLoader(
        TwoViewDataset(images, transform),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    step = simclr_step_fn(args, device)

    def epoch():
        n = 0
        for views in loader:
            step(list(views))
            n += len(views[0])
        return n

    return best_epoch(epoch, args.epochs, device)


class timed_hook:  # noqa: N801  (used as a context manager, like a function)
    """Time a method's `before_epoch` (the per-epoch clustering of LA and DeepCluster, LLP's
    label propagation) while it trains: `seconds[epoch]`, for methods that override it."""

    def __init__(self, method: str):
        self.cls, self.seconds = METHODS.get(method), {}

    def __enter__(self):
        original = self.original = self.cls.before_epoch
        if original is Method.before_epoch:
            return self

        def timed(method, ctx):
            start = time.perf_counter()
            original(method, ctx)
            self.seconds[ctx.epoch] = time.perf_counter() - start

        self.cls.before_epoch = timed
        return self

    def __exit__(self, *exc):
        self.cls.before_epoch = self.original

    def report(self, row: dict) -> str:
        """The step's seconds and share of the reported epoch (which includes the step)."""
        if row["epoch"] not in self.seconds:
            return ""
        step = self.seconds[row["epoch"]]
        return f"  per-epoch step (before_epoch) {step:6.2f} s = {step / row['s_per_epoch']:5.1%}"


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    if args.threads is None and device.type == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "simclr"]
    methods = ["simclr", *methods]  # the ratios below are SimCLR's
    steps = args.n_images // args.batch_size
    print(
        f"device {device}, resnet18 width {args.width}, {args.n_images} images, batch "
        f"{args.batch_size} ({steps} steps/epoch), {args.epochs} epochs (best after first), "
        f"threads {torch.get_num_threads()}, workers {args.workers}, compile {args.compile}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset, split = make_dataset(tmp, args.n_images)
        simclr_s = None
        for method in methods:
            with timed_hook(method) as hook:
                row = engine_run(method, args, dataset, split, tmp / method)
            simclr_s = simclr_s or row["s_per_epoch"]
            print(
                f"  {method:<21} {row['s_per_epoch']:8.2f} s/epoch "
                f"{row['images_per_s']:10.0f} images/s  x{row['s_per_epoch'] / simclr_s:5.2f} "
                f"SimCLR" + hook.report(row),
                flush=True,
            )
        engine = bare = loader = 0.0
        for r in range(args.rounds):
            out = tmp / f"round{r}"
            engine = max(engine, engine_run("simclr", args, dataset, split, out)["images_per_s"])
            bare = max(bare, ceiling(args, device, steps))
            loader = max(loader, dataloader_pipeline(args, device, dataset))
    summary = {
        "simclr_engine_images_per_s": round(engine, 1),
        "ceiling_images_per_s": round(bare, 1),
        "dataloader_images_per_s": round(loader, 1),
        "engine_over_ceiling": round(engine / bare, 3),
        "engine_over_dataloader": round(engine / loader, 3),
    }
    print(f"  best of {args.rounds} interleaved rounds:")
    print(f"  simclr engine                       {engine:10.0f} images/s")
    print(f"  simclr ceiling (pre-made tensors)   {bare:10.0f} images/s")
    print(f"  simclr torchvision DataLoader       {loader:10.0f} images/s")
    print(f"  engine / ceiling    {engine / bare:6.3f}")
    print(f"  engine / dataloader {engine / loader:6.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
