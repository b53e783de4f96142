"""Instance Recognition (Wu, Xiong, Yu & Lin, 2018): non-parametric softmax over a memory bank.

Each image is its own class, scored against a memory bank of every training image's embedding.

One augmented view per image (as in the paper) through the backbone and the head to a 128-d
l2-normalised embedding v. The loss (`ssltrace.losses.instance`) is the full softmax over the
bank at temperature 0.07 (`nce_negatives` = 0, the default: at CIFAR scale the [batch, n]
logits are cheap), or Wu et al.'s NCE approximation with `nce_negatives` uniform noise entries
per image and the Monte-Carlo normaliser Z (§3.2; the paper uses 4096 on ImageNet). After the
optimiser step the batch's bank entries move towards v with momentum `bank_momentum` (0.5)
and are renormalised (`ssltrace.methods.memory_bank`).

Loss split: `invariance` = mean of -v . V_i / t (pull to the image's own bank entry, i.e. to
the running average of its earlier views), `regularisation` = mean log-partition over the
bank (NCE: its NCE estimate); they add up to the loss.

Deliberate differences: the head is by default the project's MLPHead (fc1 -> ReLU -> BN ->
fc2, as every other method's) where the paper has one linear layer (`linear_head: true`);
the proximal term of §3.3 is left out, as in the authors' released code (lemniscate.pytorch).

Parameters: `temperature` (0.07), `bank_momentum` (0.5), `nce_negatives` (0 = full softmax),
`proj_hidden_dim` (null = the backbone's out_dim), `proj_dim` (128), `linear_head` (false).
"""

from __future__ import annotations

from ssltrace.methods.base import METHODS
from ssltrace.methods.memory_bank import MemoryBankMethod


@METHODS.register("instance_recognition")
class InstanceRecognition(MemoryBankMethod):
    name = "instance_recognition"

    def loss(self, views, labels=None, index=None):
        return self.instance_loss(self.embed(views, index), index)
