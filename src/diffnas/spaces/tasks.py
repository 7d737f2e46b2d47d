"""What a space's networks are trained for and judged by: the loss, and the evaluation over a data split.

A task is the one place an evaluation loop is written; the search (the supernet on
the val split) and the retraining (the derived network on the test split) both call it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.text import TextBatch


class Classification:
    """Image classification: cross-entropy, judged by accuracy."""

    name = "classification"
    metric = "acc"
    higher_is_better = True  # the direction of ``metric``: which of two runs (or checkpoints) is better
    bench_classes = 10  # the classes of ``random_batch`` when none are given

    def random_batch(
        self,
        cfg,
        batch_size: int,
        num_classes: int,
        generator,
        device,
        *,
        image_size: int,
        in_channels: int,
        train=True,
    ):
        """Random images and labels: what ``diffnas bench`` times a step on (no data set is read)."""
        x = torch.randn(batch_size, in_channels, image_size, image_size, generator=generator)
        y = torch.randint(0, num_classes, (batch_size,), generator=generator)
        return x.to(device), y.to(device)

    def batch_loss(self, net: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, network output) of one training batch: the one place a method's loss meets the network."""
        x, y = batch
        logits = net(x)
        return self.loss(logits, y), logits

    def summarize(self, means: dict, prefix: str) -> dict:
        """Per-sample means ``{"<prefix>_loss", "<prefix>_<metric>"}`` -> what a record reports."""
        return means

    def loss(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    def score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        """The metric on one batch (accuracy)."""
        return (logits.argmax(1) == y).float().mean().item()

    @torch.no_grad()
    def evaluate(self, net: torch.nn.Module, batches, top5: bool = False) -> dict:
        """Sums over the batches: ``{"loss": sum of losses, "acc": correct, "n": samples}`` (eval mode);
        ``top5``: also ``"top5"``, the samples whose label is among the 5 largest logits (ImageNet's figure)."""
        was_training = net.training
        net.eval()
        total, correct, correct5, loss = 0, 0, 0, 0.0
        for x, y in batches:
            logits = net(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            if top5:
                best = logits.topk(min(5, logits.shape[1]), dim=1).indices
                correct5 += (best == y[:, None]).any(1).sum().item()
            total += y.numel()
        net.train(was_training)
        return {"loss": loss, "acc": correct, "n": total, **({"top5": correct5} if top5 else {})}


class LanguageModelling:
    """Next-word prediction on contiguous text: cross-entropy per token, judged by perplexity (lower is better).

    The network is ``net(x, hidden) -> (logits, hidden at the end, activation penalty)``; a batch is a
    window of a text stream (``diffnas.data.text.TextBatch``) that carries its starting state and takes
    back the state at its end, so consecutive windows continue one another (truncated BPTT).
    """

    name = "language-model"
    metric = "ppl"
    higher_is_better = False
    bench_classes = 10_000  # Penn Treebank's vocabulary: the decoder is a large part of a step

    def random_batch(self, cfg, batch_size: int, num_classes: int, generator, device, *, train=True, **image_sizes):
        """A window of ``search.bptt`` random tokens over ``batch_size`` streams from the zero state, as ``diffnas
        bench`` times a step on; a training window has the AR/TAR penalty (image sizes do not apply)."""
        tokens = torch.randint(0, num_classes, (cfg.search.bptt + 1, batch_size), generator=generator).to(device)
        return TextBatch(tokens[:-1], tokens[1:].reshape(-1), None, 1.0, regularize=train)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        return math.exp(self.loss(logits, y).item())

    def batch_loss(self, net: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the window, plus the AR/TAR penalty on training windows (the reference's weight loss)."""
        logits, hidden, penalty = net(batch.x, batch.hidden)
        batch.carry(hidden)
        loss = self.loss(logits, batch.y)
        if batch.regularize:
            loss = loss + penalty
        return loss, logits

    @torch.no_grad()
    def evaluate(self, net: torch.nn.Module, batches) -> dict:
        """Sums over consecutive windows, the state carried from each to the next: ``{"loss", "n": tokens}``."""
        was_training = net.training
        net.eval()
        loss, n, hidden = 0.0, 0, None
        for x, y in batches:
            logits, hidden, _ = net(x, hidden)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            n += y.numel()
        net.train(was_training)
        return {"loss": loss, "n": n}

    def summarize(self, means: dict, prefix: str) -> dict:
        """Perplexity = exp(mean loss per token): it is not a mean of per-token values."""
        return {**means, f"{prefix}_ppl": math.exp(min(means[f"{prefix}_loss"], 700.0))}


CLASSIFICATION = Classification()
LANGUAGE_MODEL = LanguageModelling()
