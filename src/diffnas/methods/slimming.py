"""Network Slimming (Liu et al., ICCV 2017), the width-search baseline of RARTS's Table 5.

The weights train on all the data (each step: a train-split batch, then a val-split batch,
so an epoch sees every image once) with the l1 subgradient ``sparsity * sign(gamma)`` added
to the gradient of every BN scale gamma that precedes a prunable channel; there is no
architecture step (the channel scores stay at their initial value). Channels are ranked by
|gamma| with the space's pruning rule (a global percentile, as the reference code).
"""

from __future__ import annotations

import torch

from .base import accuracy
from .darts import DARTS


class Slimming(DARTS):
    name = "slimming"
    help = "Network Slimming: all data, l1 on the BN scales (s * sign(gamma)), prune by |gamma| (width spaces)"
    defaults = {"space": "resnet164-width"}  # its paper's network; the width spaces set NS's protocol
    options = {"sparsity": 1e-5}  # s: the reference's value for ResNet-164
    requires = frozenset({"channel-scores"})

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        super().__init__(cfg, space, in_channels, num_classes, device)
        self.sparsity = float(self.opts.sparsity)
        self.gammas = {id(g) for g in self.net.bn_scales().values()}

    def updates(self, batch, val_batches, arch_due: bool) -> dict:
        with self.phase("weight"):
            record = self.weight_step(batch)
            second = self.weight_step(val_batches.next())
        return {"loss": (record["loss"] + second["loss"]) / 2, "acc": (record["acc"] + second["acc"]) / 2}

    def weight_step(self, batch) -> dict:
        loss, logits = self.loss(batch)
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True)
        grads = [self.l1_subgradient(p, g) for p, g in zip(self.weights, grads)]
        self.apply_weight_grads(self.weights, grads)
        return {"loss": loss.item(), "acc": accuracy(logits, batch[1])}

    def l1_subgradient(self, p, g):
        """g + s * sign(p) for a BN scale before a prunable channel, g otherwise."""
        if id(p) not in self.gammas:
            return g
        extra = self.sparsity * torch.sign(p.detach())
        return extra if g is None else g + extra

    def ranking(self) -> dict:
        return {k: g.detach().abs().cpu() for k, g in self.net.bn_scales().items()}

    def genotype(self):
        return self.space.derive(self.ranking())

    def epoch_record(self) -> dict:
        return {"bn_scales": self.ranking()}
