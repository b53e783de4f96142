"""The training loop: one run (method x seed) from initialisation to the last epoch.

`train_run(run, dataset_path, split_path, out_dir)` writes `checkpoints/epoch_EEE.pt` for every
epoch 0..epochs (0 = initialisation) and `train_log.tsv`, and resumes from `.state/` after an
interruption (see `ssltrace.training.state`). With `deterministic: true` on the CPU a resumed
run ends bit-identical to an uninterrupted one: the permutation and augmentation generators of
epoch e are seeded from (seed, e) alone, and everything else that carries over (weights, EMA
target, queue, optimiser, grad scaler, global RNG) is restored from the saved state.

Speed (the GPU path; each trick is marked "speed:" where it is applied):
- the whole training set lives on the device as uint8; batches are index gathers, no DataLoader
  (a folder dataset, too large for memory, streams decoded uint8 batches from DataLoader
  workers instead: ssltrace.training.streaming);
- augmentation runs batched on the device from a device generator (ssltrace.augment);
- channels_last memory format and bf16 autocast (`amp: auto` = bf16 on CUDA, off on CPU);
- optional torch.compile of the backbone; cudnn.benchmark and TF32 unless deterministic;
- losses are summed on the device and read once per epoch (one GPU sync per epoch);
- fused optimiser kernels on CUDA (ssltrace.training.optim).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssltrace import io, tables
from ssltrace.augment import AugmentConfig, Augmenter
from ssltrace.config import defaults, runtime_keys
from ssltrace.device import resolve_device as shared_resolve_device
from ssltrace.methods import METHODS, EpochContext, Method
from ssltrace.network import build_network
from ssltrace.training import ddp
from ssltrace.training.data import TrainingSet, load_training_set
from ssltrace.training.labels import masked_labels
from ssltrace.training.optim import build_optimizer
from ssltrace.training.schedule import build_schedule
from ssltrace.training.state import CHECKPOINT_FORMAT, StateStore

LOG_COLUMNS = tables.TRAIN_LOG_COLUMNS
PARTS = ("loss", "invariance", "regularisation")
# Where and how fast a run is computed (the schema's x-runtime-only keys of `train`).
RUNTIME_ONLY = runtime_keys("train")
RUN_KEYS = ("method", "seed", "method_params", "architecture", "train", "augment")
# Present only in runs that set them (so adding a key leaves every other run's fingerprint).
OPTIONAL_RUN_KEYS = ("labels",)  # the labelled subset (ssltrace.training.labels)

StepHook = Callable[[int, int], None]
# Steps between reads of the running loss (each read waits for the GPU): a diverging run
# stops within this many steps instead of at the end of its epoch.
CHECK_EVERY = 20
# Torch threads of a deterministic CPU run when train.threads is unset. Its numbers depend on
# the thread count (reductions are split per thread: 1 vs 2 threads differ in the 12th digit
# of a convolution's gradient, and after two epochs of SGD in the 2nd digit of the loss), so
# the count cannot be what a job happens to be granted (min(rule threads, --cores)).
DETERMINISTIC_CPU_THREADS = 2


def train_run(
    run: Mapping[str, Any],
    dataset_path: Path,
    split_path: Path,
    out_dir: Path,
    log: Callable[[str], None] = print,
    *,
    _on_step: StepHook | None = None,
) -> None:
    """Train (or resume) one run and write its checkpoints and train_log.tsv under `out_dir`.

    `run` is complete and validated: `ssltrace.study.run_settings` of a checked config
    ({"method", "seed", "method_params", "architecture", "train", "augment"}, every key of
    the schema's `train`). Each component checks its own settings as it is built.
    `_on_step(epoch, step)` is called after every optimiser step (tests use it to interrupt).
    """
    check_complete(run)
    if Path(split_path).is_file():  # a flipped digit is still valid JSON: another split
        io.check_digest(split_path)
    train = run["train"]
    world = ddp.world_from_env()  # several processes under torchrun (training/ddp.py)
    ddp.check_settings(train, world)
    data = load_training_set(dataset_path, split_path, train["loader_workers"])
    device = ddp.device(world, train["device"], resolve_device)
    if not world.writer:
        log = _quiet
    if METHODS.get(run["method"]).trains and len(data.images) < train["batch_size"]:
        raise ValueError(
            f"train.batch_size {train['batch_size']} exceeds the {len(data.images)} training "
            "images of the known classes (incomplete batches are dropped)"
        )
    with ddp.process_group(world, device), runtime_settings(train, device):
        trainer = Trainer(run, data, device, Path(out_dir), log, world)
        if trainer.threads:
            log(
                f"{trainer.name}: deterministic on the CPU, so on {trainer.threads} torch "
                f"thread{'s' if trainer.threads > 1 else ''} (train.threads) whatever the job "
                "was granted: its numbers depend on the count"
            )
        with ddp.locked(trainer.store, log, world):
            trainer.fit(_on_step)


def _quiet(message: str) -> None:
    """The log of ranks > 0: rank 0 reports for the run."""


def check_complete(run: Mapping[str, Any]) -> None:
    """A run carries exactly the keys of a validated config's run (defaults are filled by the
    config, never here); each value is checked by the component it configures."""
    train_keys = defaults()["train"]
    train = run.get("train", {})
    unknown = [k for k in run if k not in RUN_KEYS + OPTIONAL_RUN_KEYS]
    unknown += [f"train.{k}" for k in train]
    unknown = [k for k in unknown if not k.startswith("train.") or k[6:] not in train_keys]
    if unknown:
        raise ValueError(f"run has unknown key(s) {', '.join(map(repr, unknown))}")
    missing = [key for key in RUN_KEYS if key not in run]
    missing += [f"train.{key}" for key in train_keys if key not in train]
    if missing:
        raise ValueError(
            f"run lacks {', '.join(map(repr, missing))}: pass a complete run "
            "(ssltrace.study.run_settings of a validated config)"
        )


def resolve_device(device: str) -> torch.device:
    """The run's device (`ssltrace.device.resolve_device`), errors naming run.train.device."""
    try:
        return shared_resolve_device(device)
    except ValueError as exc:
        raise ValueError(f"run.train.device: {exc}") from None


@contextlib.contextmanager
def runtime_settings(train: Mapping[str, Any], device: torch.device) -> Iterator[None]:
    """Threads and determinism for the run, restored afterwards (they are process-global)."""
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
    )
    try:
        threads = cpu_threads(train, device) or train["threads"]
        if threads:
            torch.set_num_threads(threads)
        if train["deterministic"]:
            # cuBLAS needs a fixed workspace to be deterministic; read at its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # speed: autotuned conv kernels
            torch.set_float32_matmul_precision("high")  # speed: TF32 outside autocast
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.set_float32_matmul_precision(saved[3])


def cpu_threads(train: Mapping[str, Any], device: torch.device) -> int | None:
    """The torch threads of a deterministic CPU run, fixed whatever a job is granted (None
    for other runs, whose numbers are not reproducible anyway: they use what they get)."""
    if device.type != "cpu" or not train["deterministic"]:
        return None
    return train["threads"] or DETERMINISTIC_CPU_THREADS


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("run.train.amp 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def epoch_seeds(seed: int, epoch: int) -> tuple[int, int, int]:
    """Seeds of epoch `epoch`'s permutation, augmentation and method-hook generators, from
    (seed, epoch) alone (the first two are those of the two-seed version of this function)."""
    perm, aug, hook = np.random.SeedSequence([seed, epoch]).generate_state(3, dtype=np.uint64)
    return int(perm), int(aug), int(hook)


class Trainer:
    """The state of one run in memory: model, optimiser, schedule, data on the device."""

    def __init__(
        self,
        run: Mapping[str, Any],
        data: TrainingSet,
        device: torch.device,
        out_dir: Path,
        log: Callable[[str], None],
        world: ddp.World = ddp.ONE,
    ):
        self.device, self.log, self.world = device, log, world
        self.train = train = dict(run["train"])
        self.epochs = train["epochs"]
        self.batch_size = train["batch_size"]
        self.n_classes = data.n_classes
        self.method = self._build_method(run, data.n_classes, len(data.images))
        ddp.seed_global_rng(run["seed"], world)
        self.local_batch = self.batch_size // world.size  # this process's share of a step
        # The run as trained: the method's and the augmentation's own defaults filled in.
        augment = AugmentConfig.from_dict(run["augment"]).to_dict()
        self.spec = {**run, "method_params": self.method.params, "augment": augment}
        self.steps_per_epoch = len(data.images) // self.batch_size
        self.optimizer = build_optimizer(self.method, train["optimizer"], device)
        self.schedule = build_schedule(
            train["schedule"], train["optimizer"].get("lr"), self.epochs, self.steps_per_epoch
        )
        self.amp = amp_dtype(train["amp"], device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        self.store = StateStore(out_dir)
        self.description = self._description(data)
        # Recorded beside the fingerprint, not in it: a run may still move to a GPU and resume.
        self.threads = cpu_threads(train, device) if self.method.trains else None
        self.data = data
        self.labels = self._labels(run.get("labels"))
        if self.method.needs_depth and data.depth is None:
            raise ValueError(
                f"method {self.spec['method']!r} predicts depth, and the dataset has no "
                "train_depth array (docs/ARCHITECTURE.md, dataset file)"
            )
        self.rows: list[dict[str, float]] = []

    def _labels(self, setting: Mapping[str, Any] | None) -> np.ndarray:
        """The training labels the method sees: unlabelled images' set to -1 by `labels`."""
        if setting is not None and not self.method.label_subset:
            raise ValueError(
                f"run.labels: method {self.spec['method']!r} trains on every label or none; "
                "a labelled subset is for the semi-supervised methods and the few-label control"
            )
        try:
            return masked_labels(self.data.labels, setting)
        except ValueError as exc:
            raise ValueError(f"run.labels: {exc}") from None

    @property
    def name(self) -> str:
        return f"{self.spec['method']} seed {self.spec['seed']}"

    def _build_method(self, run: Mapping[str, Any], n_classes: int, n_images: int) -> Method:
        # Built on the CPU under the run's seed: the initialisation is the same on any device.
        torch.manual_seed(run["seed"])
        method = build_network(run["architecture"], run["method"], run["method_params"], n_classes)
        method.setup(n_images)
        method.to(self.device)
        if self.train.get("sync_bn"):
            method = ddp.sync_batchnorm(method, self.world, self.device)
        if self.train["channels_last"]:
            method.to(memory_format=torch.channels_last)  # speed: NHWC convolutions
        if self.train["compile"]:
            method.backbone.compile()  # speed: fused kernels; state_dict keys unchanged
        return method

    def _description(self, data: TrainingSet) -> dict[str, Any]:
        """What the saved state must match to be resumed (the fingerprint's input)."""
        spec = self.spec
        # Where and how fast a run is computed does not change what it learns: a run may move
        # to another device or turn on compilation and still resume.
        train = {k: v for k, v in spec["train"].items() if k not in RUNTIME_ONLY}
        # Epochs matter only when the lr or momentum schedule spans the whole run.
        if not (self.schedule.depends_on_epochs or self.method.uses_progress):
            train.pop("epochs")
        if train.get("processes", 1) == 1:  # one-process fingerprints as before these keys
            train.pop("processes", None)
            train.pop("sync_bn", None)
        if not self.method.trains:
            train = {}
        return {**spec, "train": train, "data": data.digest(with_depth=self.method.needs_depth)}

    def fit(self, on_step: StepHook | None = None) -> None:
        if self.method.trains:
            ddp.check_saved_world(self.store.saved_description(), self.world, self.store.root)
        last = ddp.rank0_first(self._restore)  # rank 0 repairs the state, then others read it
        target = self.epochs if self.method.trains else 0
        if last >= target:
            if self.world.writer:
                self.store.expose(target)
                self._write_log(target)
            self.log(f"{self.name}: epochs 0..{target} already trained; nothing to do")
            return
        if last < 0:
            self._commit(0)
            self.log(f"{self.name}: initialisation saved as epoch 0")
            last = 0
        self._train_epochs(last + 1, target, on_step)

    def _restore(self) -> int:
        """Load the saved state if it matches and every stored epoch is sound; return the last
        finished epoch (-1: none, the state was reset)."""
        reason = self.store.mismatch(self.description, self.threads)
        state = None
        if reason is None:
            state, reason = self.store.load_resume()
        if state is not None:
            reason = self._check_epochs(state)
            if reason is not None:
                state = None
        if state is None:
            if reason is not None:
                self.log(f"{self.name}: discarding saved training state ({reason}); starting over")
            if self.world.writer:
                self.store.reset(self.description, self.threads)
            return -1
        epoch = state["epoch"]
        checkpoint = state.get("checkpoint") or self.store.load_epoch(epoch)
        self.method.load_state_dict(checkpoint["state_dict"])
        self.method.load_training_state(state.get("method_state", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rank_rng", [state["rng"]])[self.world.rank]
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng.get("cuda"):
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.rows = list(state["rows"])
        if self.world.writer:
            self.store.record(self.description, self.threads)  # rewritten: it may be damaged
            self.store.expose(min(epoch, self.epochs if self.method.trains else 0))
        self.log(f"{self.name}: resuming after epoch {epoch} from {self.store.root}")
        return epoch

    def _check_epochs(self, state: Mapping[str, Any]) -> str | None:
        """Why the stored epochs cannot be resumed from (None: they can). A damaged or missing
        last epoch is rewritten from the copy committed in resume.pt; an earlier one could
        only be recomputed from that epoch's optimiser state, which is not kept."""
        last = state["epoch"]
        bad = self.store.damaged_epochs(last)
        if list(bad) == [last] and "checkpoint" in state:
            if self.world.writer:
                self.store.save_epoch(last, state["checkpoint"])
            self.log(f"{self.name}: {bad[last]}; rewrote it from {self.store.resume_path}")
            return None
        if not bad:
            return None
        first = min(bad)
        more = f" (and {len(bad) - 1} more stored epochs)" if len(bad) > 1 else ""
        return f"{bad[first]}{more}"

    def _train_epochs(self, first: int, last: int, on_step: StepHook | None) -> None:
        images = self.data.device_images(self.device)  # speed: data on device (folder: lazy)
        labels = torch.from_numpy(self.labels).to(self.device)
        depth = None
        if self.method.needs_depth:  # float32 on the device, gathered per batch as the images
            depth = torch.from_numpy(self.data.depth.astype(np.float32)).to(self.device)
        augmenter = Augmenter(
            self.spec["augment"], self.device, colour_space=self.method.colour_space
        )
        self.method.train()
        durations = []
        for epoch in range(first, last + 1):
            start = time.perf_counter()
            parts, lr = self._train_epoch(epoch, images, labels, augmenter, on_step, depth)
            seconds = time.perf_counter() - start
            durations.append(seconds)
            n_images = self.steps_per_epoch * self.batch_size
            row = {
                "epoch": epoch,
                **parts,
                "lr": lr,
                "seconds": seconds,
                "images_per_s": n_images / seconds,
            }
            self.rows.append(row)
            self._commit(epoch)
            eta = (last - epoch) * sum(durations) / len(durations)
            self.log(
                f"{self.name} epoch {epoch}/{last}: loss {parts['loss']:.4f} (invariance "
                f"{parts['invariance']:.4f}, regularisation {parts['regularisation']:.4f}) "
                f"lr {lr:.4g}, {row['images_per_s']:.0f} images/s, {seconds:.1f} s, "
                f"ETA {_duration(eta)}"
            )

    def _train_epoch(
        self,
        epoch: int,
        images: torch.Tensor,
        labels: torch.Tensor,
        augmenter: Augmenter,
        on_step: StepHook | None,
        depth: torch.Tensor | None = None,
    ) -> tuple[dict[str, float], float]:
        perm_seed, aug_seed, hook_seed = epoch_seeds(self.spec["seed"], epoch)
        aug_seed = ddp.rank_seed(aug_seed, self.world.rank)  # (seed, epoch, rank)
        method, optimizer, batch = self.method, self.optimizer, self.local_batch
        ddp.sync_from_rank0(method)  # BatchNorm statistics of rank 0 (training/ddp.py)
        ctx = EpochContext(
            epoch=epoch,
            images=images,
            labels=labels,
            plain=augmenter.plain,
            generator=torch.Generator(device=self.device).manual_seed(hook_seed),
            optimizer=optimizer,
            batch_size=self.batch_size,
        )
        method.before_epoch(ctx)
        order = method.epoch_order(ctx)
        if order is None:
            permutation = torch.Generator().manual_seed(perm_seed)
            order = torch.randperm(len(images), generator=permutation)
        order = order.to(self.device, non_blocking=True)
        ddp.sync_from_rank0(method, order)  # the epoch's order, clusters, re-drawn layers
        order = ddp.local_order(order, self.steps_per_epoch, self.batch_size, self.world)
        order = order[: self.steps_per_epoch * batch]  # this process's full batches only
        aug_generator = torch.Generator(device=self.device).manual_seed(aug_seed)
        total_steps = max(1, self.epochs * self.steps_per_epoch)
        sums = torch.zeros(len(PARTS), device=self.device)
        memory_format = (
            torch.channels_last if self.train["channels_last"] else torch.contiguous_format
        )
        # In-memory sets gather batches on the device; folder sets stream them from disk.
        for step, (index, x) in enumerate(self.data.batches(order, batch, self.device)):
            global_step = (epoch - 1) * self.steps_per_epoch + step
            # speed: batched augmentation on the device, no per-sample Python work.
            extra = {}
            if depth is None:
                views = augmenter.views(x, method.n_views, aug_generator)
            else:  # each view's depth map cropped and mirrored as its image
                views, extra["depth"] = augmenter.views_with_maps(
                    x, depth[index], method.n_views, aug_generator
                )
            views = [v.contiguous(memory_format=memory_format) for v in views]
            lr = self.schedule(global_step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                out = method.loss(
                    views, labels[index] if method.uses_labels else None, index, **extra
                )
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(out["loss"]).backward()
            ddp.average_gradients(list(method.parameters()))
            self.scaler.step(optimizer)
            self.scaler.update()
            method.after_step(global_step / total_steps)
            # speed: accumulate on the device; read back every CHECK_EVERY steps only.
            sums += torch.stack([out[k].detach().float() for k in PARTS])
            if step % CHECK_EVERY == CHECK_EVERY - 1 or step == self.steps_per_epoch - 1:
                self._check_finite(float(ddp.mean_over_ranks(sums)[0]), epoch, step)
            if on_step is not None:
                on_step(epoch, step)
        sums = ddp.mean_over_ranks(sums)
        means = dict(zip(PARTS, (sums / self.steps_per_epoch).tolist(), strict=True))
        return means, lr

    def _check_finite(self, loss_sum: float, epoch: int, step: int) -> None:
        if not math.isfinite(loss_sum):
            raise FloatingPointError(
                f"{self.spec['method']} seed {self.spec['seed']}: the loss became {loss_sum} "
                f"in epoch {epoch} (by step {step + 1}); training stopped (try a lower "
                "learning rate or a warm-up)"
            )

    def _commit(self, epoch: int) -> None:
        """Save epoch `epoch`: weights + checkpoint link, then the resume state (with a copy of
        the checkpoint, from which a damaged last epoch is rewritten), then the log."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        rank_rng = ddp.all_rng_states(rng)
        if self.world.writer:
            self._save(epoch, rng, rank_rng)
        ddp.barrier()  # the others wait until rank 0 has committed the epoch

    def _save(self, epoch: int, rng: dict, rank_rng: list) -> None:
        checkpoint = self._checkpoint(epoch)
        self.store.save_epoch(epoch, checkpoint)
        self.store.save_resume(
            {
                "epoch": epoch,
                "method_state": {
                    k: v.detach().to("cpu", copy=True)
                    for k, v in self.method.training_state().items()
                },
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "rows": self.rows,
                # Several processes: the world size and every rank's RNG (training/ddp.py).
                **(
                    {"world_size": self.world.size, "rank_rng": rank_rng}
                    if self.world.size > 1
                    else {}
                ),
                "checkpoint": checkpoint,
            }
        )
        self._write_log(epoch)

    def _world_state(self, rank_rng: list) -> dict[str, Any]:
        """Several processes: the world size and every rank's RNG state (training/ddp.py)."""
        if self.world.size == 1:
            return {}
        return {"world_size": self.world.size, "rank_rng": rank_rng}

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.method.state_dict().items()}
        return {
            "format": CHECKPOINT_FORMAT,
            "method": self.spec["method"],
            "seed": self.spec["seed"],
            "epoch": epoch,
            "architecture": self.spec["architecture"],
            "method_params": self.method.params,
            "n_classes": self.n_classes,
            "state_dict": state,
        }

    def _write_log(self, last_epoch: int) -> None:
        import pandas as pd

        rows = [row for row in self.rows if row["epoch"] <= last_epoch]
        io.save_table(self.store.out_dir / "train_log.tsv", pd.DataFrame(rows, columns=LOG_COLUMNS))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
