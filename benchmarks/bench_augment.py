"""Images per second: batched `ssltrace.augment.Augmenter` vs torchvision per-image transforms.

Both sides run the same augmentation (the `seed000` preset: random resized crop, flip, colour
jitter with p=0.8, grayscale, normalisation) on the same uint8 CIFAR-sized images. The
torchvision baselines are what a Dataset's __getitem__ does inside a DataLoader worker: one
image at a time, from a PIL image (torchvision's CIFAR datasets) or from a uint8 tensor
(transforms.v2). Per-image pipelines scale with DataLoader workers, so the CPU comparison is
made per core (one thread each); the batched augmenter is also timed with all threads.

    python benchmarks/bench_augment.py [--n 4096] [--batch 512] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.v2 as T2
from PIL import Image

from ssltrace.augment import AugmentConfig, Augmenter


def torchvision_pipeline(config: AugmentConfig, v2: bool):
    ns = T2 if v2 else T
    jitter = ns.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue)
    to_float = [T2.ToDtype(torch.float32, scale=True)] if v2 else [T.ToTensor()]
    return ns.Compose(
        [
            ns.RandomResizedCrop(
                config.size, scale=config.crop_scale, ratio=config.crop_ratio, antialias=True
            ),
            ns.RandomHorizontalFlip(config.flip_p),
            ns.RandomApply([jitter], p=config.jitter_p),
            ns.RandomGrayscale(config.grayscale_p),
            *to_float,
            ns.Normalize(config.mean, config.std),
        ]
    )


def rate(run, n_images: int, sync=lambda: None, repeats: int = 3) -> float:
    """Best of `repeats` timings of run() (after one warm-up call), in images per second."""
    run()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def per_image_pil(images: np.ndarray, pipeline) -> None:
    torch.stack([pipeline(Image.fromarray(img)) for img in images])


def per_image_tensor(images: torch.Tensor, pipeline) -> None:
    torch.stack([pipeline(img) for img in images])


def batched(images: torch.Tensor, aug: Augmenter, batch: int, generator) -> None:
    for start in range(0, images.shape[0], batch):
        aug(images[start : start + batch], generator)


def bench_cpu(images: np.ndarray, config: AugmentConfig, batch: int) -> None:
    n = len(images)
    per_image_n = min(n, 1024)  # per-image pipelines are slow; time a subset
    all_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pil = rate(
        lambda: per_image_pil(images[:per_image_n], torchvision_pipeline(config, False)),
        per_image_n,
    )
    chw = torch.from_numpy(images[:per_image_n]).permute(0, 3, 1, 2)
    tensor = rate(lambda: per_image_tensor(chw, torchvision_pipeline(config, True)), per_image_n)
    hwc = torch.from_numpy(images)
    aug = Augmenter(config, device="cpu")
    generator = torch.Generator().manual_seed(0)
    ours_1 = rate(lambda: batched(hwc, aug, batch, generator), n)
    torch.set_num_threads(all_threads)
    ours_all = rate(lambda: batched(hwc, aug, batch, generator), n)
    print(f"CPU, {n} images 32x32, batch {batch}")
    print(f"  torchvision per image, PIL       (1 thread)   {pil:10.0f} img/s")
    print(f"  torchvision per image, v2 tensor (1 thread)   {tensor:10.0f} img/s")
    print(f"  ssltrace batched                 (1 thread)   {ours_1:10.0f} img/s")
    print(f"  ssltrace batched                 ({all_threads} threads)  {ours_all:10.0f} img/s")
    print(f"  ratio batched / PIL per image, per core:    {ours_1 / pil:6.1f}x")
    print(f"  ratio batched / tensor per image, per core: {ours_1 / tensor:6.1f}x")


def bench_cuda(images: np.ndarray, config: AugmentConfig, batch: int) -> None:
    n = len(images)
    device = torch.device("cuda")
    hwc = torch.from_numpy(images).to(device)
    aug = Augmenter(config, device=device)
    sync = torch.cuda.synchronize
    cpu_generator = torch.Generator().manual_seed(0)
    gpu_generator = torch.Generator(device=device).manual_seed(0)
    ours_cpu_gen = rate(lambda: batched(hwc, aug, batch, cpu_generator), n, sync)
    ours_gpu_gen = rate(lambda: batched(hwc, aug, batch, gpu_generator), n, sync)
    per_image_n = min(n, 512)
    chw = hwc[:per_image_n].permute(0, 3, 1, 2)
    tensor = rate(
        lambda: per_image_tensor(chw, torchvision_pipeline(config, True)), per_image_n, sync
    )
    print(f"CUDA ({torch.cuda.get_device_name(device)}), {n} images, batch {batch}")
    print(f"  torchvision per image, v2 tensor on GPU     {tensor:10.0f} img/s")
    print(f"  ssltrace batched, CPU generator             {ours_cpu_gen:10.0f} img/s")
    print(f"  ssltrace batched, CUDA generator            {ours_gpu_gen:10.0f} img/s")
    print(f"  ratio batched (CPU generator) / per image:  {ours_cpu_gen / tensor:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="images")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    args = parser.parse_args()
    config = AugmentConfig.from_dict({"preset": "seed000"})
    images = np.random.default_rng(0).integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    if args.device in ("cpu", "all"):
        bench_cpu(images, config, args.batch)
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            bench_cuda(images, config, args.batch)
        else:
            print("CUDA: not available, skipped")


if __name__ == "__main__":
    main()
