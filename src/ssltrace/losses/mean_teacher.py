"""Mean Teacher's loss (Tarvainen & Valpola, 2017, §2): classification cost on the labelled
images plus a consistency cost between the student's and the EMA teacher's predictions.

With z the student's logits of one augmentation of each image [B, C], z' the teacher's logits
of another augmentation [B, C], y the labels (-1 = unlabelled), L = {i : y_i >= 0} and w the
ramped consistency weight,

    classification = (1 / B) sum_{i in L} ( -z_{i, y_i} + log sum_c exp(z_{i, c}) )
    consistency    = mean_{i, c} ( softmax(z_i)_c - softmax(z'_i)_c )^2          (all images)
    loss           = classification + w * consistency.

The consistency is the squared difference of the class probabilities, averaged over the batch
and the C classes, as the authors' `softmax_mse_loss` (sum over classes / C, then / batch);
the teacher side carries no gradient. The classification sums over the batch's labelled
images and divides by the whole batch B, as both of the authors' implementations do
(pytorch/main.py: `class_criterion(...) / minibatch_size` with `ignore_index=NO_LABEL`;
tensorflow/mean_teacher/model.py `classification_costs`: "Take mean over all examples, not
just labeled examples"): the paper's consistency weight (100) is set against this scale.
Dividing by the labelled count instead would weigh the classification B / |L| times (4 with
a quarter of each batch labelled) more against the consistency than the paper's runs did.

Split: `invariance` = w * consistency (the agreement of two augmentations across student and
teacher), `regularisation` = classification (what rules out the constant prediction that
would satisfy the consistency alone); they add up to `loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_positive


def sigmoid_rampup(position: float, length: float) -> float:
    """exp(-5 (1 - position / length)^2), clipped to [0, 1] (Laine & Aila; Tarvainen's code);
    length 0 = no ramp (1)."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(position, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def mean_teacher_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, weight: float
) -> dict:
    """Classification on labelled rows + `weight` * softmax MSE to the teacher (docstring)."""
    if student.ndim != 2 or teacher.shape != student.shape:
        raise ValueError(
            f"student and teacher logits must both be [batch, classes], got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if labels is None or labels.shape != (len(student),):
        raise ValueError(f"labels must be [{len(student)}] (-1 = unlabelled), got {labels}")
    if weight != 0:
        check_positive("weight", weight)
    labelled = labels >= 0
    ce = F.cross_entropy(student[labelled], labels[labelled], reduction="sum")
    classification = ce / len(student)  # the whole batch, as the authors' code (docstring)
    p_student = F.softmax(student, dim=1)
    p_teacher = F.softmax(teacher.detach(), dim=1)
    consistency = weight * (p_student - p_teacher).pow(2).mean()
    return {
        "loss": classification + consistency,
        "invariance": consistency,
        "regularisation": classification,
    }
