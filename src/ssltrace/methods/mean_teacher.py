"""Mean Teacher (Tarvainen & Valpola, 2017): a student trained with cross-entropy on the
labelled images and a consistency cost to an EMA teacher's predictions on every image.

Network: the backbone and the shared MLPHead to `n_classes` logits (the supervised baseline's
classifier, so `head_fc1` is the same kind of layer); the teacher (`teacher_backbone`,
`teacher_head`) is a frozen copy updated after every step as teacher <- a teacher + (1 - a)
student. Each image gets two augmentations: the student sees the first, the teacher the second
(the paper's different noise for the two), and the loss is `losses.mean_teacher_loss`.

Schedules as the paper (§3.2, Appendix B) and the authors' code:
- consistency weight `consistency` (100, the authors' CIFAR-10 setting for the softmax MSE
  averaged over classes) times the sigmoid ramp-up exp(-5 (1 - e / `rampup_epochs`)^2) over
  the first `rampup_epochs` (5) epochs, e counting epochs in fractions of steps from 0;
- EMA decay `base_momentum` (0.99) during the ramp-up and `final_momentum` (0.999) after
  (the TensorFlow code's schedule; the PyTorch code's CIFAR-10 runs hold 0.99, or 0.97 with
  1,000 labels: set both to one value for that);
- `ema_warmup` (true, the authors' PyTorch `update_ema_variables`): the decay at the t-th
  optimiser step of the run is min(1 - 1 / (t + 1), decay), so the teacher is the plain
  average of the student's weights so far until the exponential average has enough history.
  Without it the teacher keeps decay^t of the random initialisation (0.99^36 x 0.999^108 =
  0.62 after 144 steps), which its predictions then anchor the student's consistency to;
  false = the paper's plain EMA from the first step.
Both depend on the epoch, not on the run's length: a longer run is the same run extended.

Batches as the authors' code builds them (TwoStreamBatchSampler): a fixed share of each batch,
`labelled_share` (0.25, their CIFAR-10 runs' 31 of 128), is labelled images, cycled, and the
rest unlabelled ones, so a small labelled subset reaches every step; 0 = plain random batches
(~fraction x batch labelled images per step).

With `method_settings.<name>.labels` only that subset's labels reach the loss (-1 = unlabelled);
without it every image is labelled.
"""

from __future__ import annotations

import torch

from ssltrace.losses.mean_teacher import mean_teacher_loss, sigmoid_rampup
from ssltrace.methods.base import METHODS, EpochContext, MomentumMethod, make_head
from ssltrace.methods.few_label import labelled_batches


@METHODS.register("mean_teacher")
class MeanTeacher(MomentumMethod):
    name = "mean_teacher"
    n_views = 2
    uses_labels = True
    label_subset = True
    defaults = {
        "hidden_dim": None,
        "consistency": 100.0,
        "rampup_epochs": 5,
        "base_momentum": 0.99,
        "final_momentum": 0.999,
        "labelled_share": 0.25,
        "ema_warmup": True,
    }
    positive = ("hidden_dim",)
    non_negative = ("consistency", "rampup_epochs")
    unit_interval = (*MomentumMethod.unit_interval, "labelled_share")
    momentum_pairs = (("teacher_backbone", "backbone"), ("teacher_head", "head"))

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        self.head = make_head(backbone.out_dim, self.params["hidden_dim"], n_classes)
        self.make_targets()
        self.epoch_start, self.steps_per_epoch, self.step = 0, 1, 0

    @property
    def uses_progress(self) -> bool:
        return False  # both schedules count epochs, not the fraction of the run

    @property
    def position(self) -> float:
        """Epochs trained so far (0 at the first step), in fractions of an epoch."""
        return self.epoch_start + self.step / self.steps_per_epoch

    def before_epoch(self, ctx: EpochContext) -> None:
        self.epoch_start = ctx.epoch - 1
        self.steps_per_epoch = max(1, len(ctx.images) // ctx.batch_size)
        self.step = 0

    def epoch_order(self, ctx: EpochContext) -> torch.Tensor | None:
        share = self.params["labelled_share"]
        if share == 0:
            return None  # the engine's seeded permutation of all images
        return labelled_batches(ctx.labels, ctx.batch_size, share, ctx.generator)

    def consistency_weight(self) -> float:
        ramp = sigmoid_rampup(self.position, self.params["rampup_epochs"])
        return self.params["consistency"] * ramp

    def momentum(self, progress: float) -> float:
        """The EMA decay of the update after the current step (module docstring)."""
        ramping = self.position < self.params["rampup_epochs"]
        decay = self.params["base_momentum" if ramping else "final_momentum"]
        if not self.params["ema_warmup"]:
            return decay
        t = self.epoch_start * self.steps_per_epoch + self.step + 1  # steps taken, this one too
        return min(1.0 - 1.0 / (t + 1), decay)

    def after_step(self, progress: float) -> None:
        super().after_step(progress)
        self.step += 1

    def loss(self, views, labels=None, index=None):
        if labels is None:
            raise ValueError("method 'mean_teacher' needs labels (-1 = unlabelled), got None")
        self.check_views(views)
        student = self.head(self.backbone(views[0])).float()
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(views[1])).float()
        return mean_teacher_loss(student, teacher, labels, self.consistency_weight())
