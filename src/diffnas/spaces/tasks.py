"""What a space's networks are trained for and judged by: the loss, and the evaluation over a data split.

A task is the one place an evaluation loop is written; the search (the supernet on
the val split) and the retraining (the derived network on the test split) both call it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Classification:
    """Image classification: cross-entropy, judged by accuracy."""

    name = "classification"
    metric = "acc"

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        """The metric on one batch (accuracy)."""
        return (logits.argmax(1) == y).float().mean().item()

    @torch.no_grad()
    def evaluate(self, net: torch.nn.Module, batches) -> dict:
        """Sums over the batches: ``{"loss": sum of losses, "acc": correct, "n": samples}`` (eval mode)."""
        was_training = net.training
        net.eval()
        total, correct, loss = 0, 0, 0.0
        for x, y in batches:
            logits = net(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += y.numel()
        net.train(was_training)
        return {"loss": loss, "acc": correct, "n": total}


CLASSIFICATION = Classification()
