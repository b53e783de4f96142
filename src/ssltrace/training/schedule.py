"""Learning-rate schedules, as pure functions of the step, each with linear warm-up.

| name           | after warm-up                                     | depends on epochs |
|----------------|---------------------------------------------------|-------------------|
| `constant`     | lr                                                 | no                |
| `step`         | lr * gamma ** (number of `milestones` epochs passed) | no              |
| `cosine`       | cosine from lr to lr*final_lr_fraction at the last step | yes          |
| `cosine_fixed` | the same cosine over `horizon` epochs, then flat   | no                |

Warm-up (`warmup_epochs`) rises linearly to lr: step s of W warm-up steps has lr (s+1)/W, as in
SimCLR/BYOL. A schedule that does not depend on the number of epochs lets a finished run be
extended (the engine resumes it); `cosine` cannot, so extending it retrains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEDULE_KEYS = {
    "constant": {"warmup_epochs"},
    "step": {"warmup_epochs", "milestones", "gamma"},
    "cosine": {"warmup_epochs", "final_lr_fraction"},
    "cosine_fixed": {"warmup_epochs", "final_lr_fraction", "horizon"},
}


@dataclass(frozen=True)
class Schedule:
    """lr(step) for a run of `epochs` epochs of `steps_per_epoch` steps."""

    name: str
    base_lr: float
    steps_per_epoch: int
    epochs: int
    warmup_epochs: int = 0
    final_lr_fraction: float = 0.0
    horizon: int | None = None
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    @property
    def depends_on_epochs(self) -> bool:
        return self.name == "cosine"

    def __call__(self, step: int) -> float:
        warmup = self.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return self.base_lr * (step + 1) / warmup
        if self.name == "constant":
            return self.base_lr
        if self.name == "step":
            passed = sum(step >= m * self.steps_per_epoch for m in self.milestones)
            return self.base_lr * self.gamma**passed
        length = (self.epochs if self.name == "cosine" else self.horizon) * self.steps_per_epoch
        progress = min(1.0, (step - warmup) / max(1, length - warmup))
        final = self.base_lr * self.final_lr_fraction
        return final + (self.base_lr - final) * (1 + math.cos(math.pi * progress)) / 2


def build_schedule(
    config: Mapping[str, Any], base_lr: float, epochs: int, steps_per_epoch: int
) -> Schedule:
    """A Schedule from the run's `train.schedule` mapping (`name` plus that schedule's keys)."""
    config = dict(config or {"name": "constant"})
    name = config.pop("name", None)
    if name not in SCHEDULE_KEYS:
        raise ValueError(
            f"train.schedule.name must be one of {', '.join(sorted(SCHEDULE_KEYS))}, got {name!r}"
        )
    unknown = sorted(set(config) - SCHEDULE_KEYS[name])
    if unknown:
        raise ValueError(
            f"train.schedule {name!r} has no key {', '.join(map(repr, unknown))}; "
            f"valid keys: name, {', '.join(sorted(SCHEDULE_KEYS[name]))}"
        )
    warmup = config.get("warmup_epochs", 0)
    _check(isinstance(warmup, int) and warmup >= 0, "warmup_epochs", "an int >= 0", warmup)
    # A run that ends inside its warm-up never reaches lr (and says nothing about it).
    _check(not epochs or warmup <= epochs, "warmup_epochs", f"<= train.epochs ({epochs})", warmup)
    fraction = config.get("final_lr_fraction", 0.0)
    _check(0 <= fraction <= 1, "final_lr_fraction", "a number in [0, 1]", fraction)
    horizon = config.get("horizon")
    if name == "cosine_fixed":
        _check(
            isinstance(horizon, int) and horizon > warmup,
            "horizon",
            f"an int > warmup_epochs ({warmup})",
            horizon,
        )
    milestones = tuple(config.get("milestones", ()))
    _check(
        all(isinstance(m, int) and m > 0 for m in milestones), "milestones", "ints > 0", milestones
    )
    gamma = config.get("gamma", 0.1)
    _check(gamma > 0, "gamma", "a number > 0", gamma)
    return Schedule(
        name, base_lr, steps_per_epoch, epochs, warmup, fraction, horizon, milestones, gamma
    )


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"train.schedule.{key} must be {expected}, got {value!r}")
