"""Folder loader throughput vs the training step it feeds (issue 19: at ImageNet scale the
loader must not be the bottleneck with 8 workers for a ResNet-50 on one GPU).

Writes a folder of ImageNet-like JPEGs (default 500 x 375 px, ImageNet's typical size; random
smooth content, so each file is ~40-60 kB like a photograph), builds its dataset file, then
times `FolderTrainingSet.batches` (torchvision.io decoding, centre square resized to load_size
256, in 0/1/2/... DataLoader workers) in images/s, and one SimCLR-style training step of
ResNet-50 (224 px, two views, forward + backward + SGD) on the same device, per batch. The
loader keeps up when workers x (images/s per worker) >= batch / step time.

    python benchmarks/bench_loader.py [--images 256] [--batch 32] [--workers 0 1 2]
                                      [--device cpu|cuda] [--step-batch 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_folder(root: Path, n: int, height: int, width: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "train" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        noise = rng.normal(0, 6, (height, width, 3))
        pixels = np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    for c in range(4):  # one test image per class (the dataset file needs a test split)
        (root / "val" / f"class{c}").mkdir(parents=True, exist_ok=True)
        src = next((root / "train" / f"class{c}").iterdir())
        (root / "val" / f"class{c}" / src.name).write_bytes(src.read_bytes())


def loader_rate(dataset: Path, split: Path, workers: int, batch: int) -> float:
    from ssltrace.training.data import load_training_set

    data = load_training_set(dataset, split, loader_workers=workers)
    order = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))
    steps = len(order) // batch
    start = time.perf_counter()
    for _ in data.batches(order, batch, torch.device("cpu")):
        pass
    return steps * batch / (time.perf_counter() - start)


def step_time(device: torch.device, batch: int, repeats: int = 3) -> float:
    """Seconds of one training step of ResNet-50 on two 224-px views of `batch` images."""
    import torchvision

    net = torchvision.models.resnet50().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(2 * batch, 3, 224, 224, device=device).contiguous(
        memory_format=torch.channels_last
    )
    amp = device.type == "cuda"
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = net(x).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--step-batch", type=int, default=8)
    args = parser.parse_args()

    from ssltrace import io
    from ssltrace.data import prepare_dataset

    torch.set_num_threads(1)  # the loader's workers each decode on one thread
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root / "img", args.images, args.height, args.width)
        size = sum(p.stat().st_size for p in (root / "img").rglob("*.jpg")) / (args.images + 4)
        prepare_dataset("imagefolder", root, root / "ds.npz", root=str(root / "img"))
        io.write_json(root / "split.json", {"seed": 0, "known_fine": [0, 1, 2, 3]})
        print(
            f"{args.images} JPEGs of {args.width}x{args.height} px (mean {size / 1e3:.0f} kB), "
            f"decoded to 256 px, batch {args.batch}"
        )
        rates = {}
        for workers in args.workers:
            rates[workers] = loader_rate(root / "ds.npz", root / "split.json", workers, args.batch)
            print(f"loader, {workers} worker(s): {rates[workers]:8.1f} images/s")
    device = torch.device(args.device)
    torch.set_num_threads(torch.get_num_threads() if device.type == "cuda" else 2)
    seconds = step_time(device, args.step_batch)
    per_image = seconds / args.step_batch
    print(
        f"ResNet-50 training step on {device} ({torch.get_num_threads()} threads), two 224-px "
        f"views: {seconds:.3f} s per batch of {args.step_batch} = {1 / per_image:.1f} images/s"
    )
    one = rates.get(1) or max(rates.values())
    print(
        f"workers needed to keep up: {(1 / per_image) / one:.2f} (at {one:.0f} images/s per "
        "worker; the loader is the bottleneck if that exceeds train.loader_workers)"
    )


if __name__ == "__main__":
    main()
