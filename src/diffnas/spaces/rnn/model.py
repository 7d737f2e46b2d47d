"""The DARTS recurrent cell and the one-layer language model around it (quark0/darts, rnn/).

Every state of the cell is a highway step: from a predecessor ``s`` a node computes
``[c | h] = s @ W`` and ``s + sigmoid(c) * (f(h) - s)`` with its op's activation ``f``.
The first state ``s0`` is the same form on ``[x_t | h_{t-1}]`` with ``tanh``, gated
towards ``h_{t-1}``; the cell's output (the next hidden state) is the mean of the
``nodes`` node states. In search every node mixes all its predecessors and all ops with
one matrix per node (shared by its incoming edges, as the reference does) and a
non-affine batch norm follows ``s0`` and every node; the derived cell has one input per
node and no batch norm.

Dropouts as the reference: ``dropoute`` drops whole rows of the embedding matrix,
``dropouti``/``dropout`` are locked (one mask per sequence) on the embeddings and on the
cell outputs, ``dropoutx``/``dropouth`` mask ``x_t`` and every state before its matrix
product, one mask per forward pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

INIT_RANGE = 0.04
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda h: h}


def _uniform(*shape) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).uniform_(-INIT_RANGE, INIT_RANGE))


def keep_mask(shape, p: float, like: torch.Tensor) -> torch.Tensor:
    """Bernoulli(1 - p) / (1 - p): inverted dropout's mask."""
    return like.new_empty(shape).bernoulli_(1 - p) / (1 - p)


class RecurrentCell(nn.Module):
    """What both cells share: the initial state, the highway step, the time loop and the state masks."""

    def __init__(self, hidden: int, nodes: int, dropouth: float, dropoutx: float):
        super().__init__()
        self.hidden, self.nodes = hidden, nodes
        self.dropouth, self.dropoutx = dropouth, dropoutx
        self.w0 = _uniform(2 * hidden, 2 * hidden)  # [x | h_prev] -> [c0 | h0] (embedding size = hidden)

    def initial_state(self, x, h_prev, x_mask, h_mask):
        if x_mask is not None:
            x, h_prev_in = x * x_mask, h_prev * h_mask
        else:
            h_prev_in = h_prev
        c0, h0 = torch.cat([x, h_prev_in], -1).mm(self.w0).chunk(2, -1)
        return h_prev + c0.sigmoid() * (h0.tanh() - h_prev)

    def step(self, x, h_prev, x_mask, h_mask) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """inputs [T, B, H], hidden [B, H] -> the hidden states [T, B, H]."""
        x_mask = h_mask = None
        if self.training:
            b = inputs.shape[1]
            x_mask = keep_mask((b, self.hidden), self.dropoutx, inputs)
            h_mask = keep_mask((b, self.hidden), self.dropouth, inputs)
        out = []
        for x in inputs:
            hidden = self.step(x, hidden, x_mask, h_mask)
            out.append(hidden)
        return torch.stack(out)


def highway(states, w, h_mask, ops):
    """For states [N, B, H]: sum over ``ops`` [(weights [N], activation)] of weights * (s + c * (f(h) - s))."""
    masked = states * h_mask if h_mask is not None else states
    c, h = masked.matmul(w).chunk(2, -1)
    c = c.sigmoid()
    return sum((wk[:, None, None] * (states + c * (f(h) - states))).sum(0) for wk, f in ops)


class SearchCell(RecurrentCell):
    """Every node mixes all earlier states and all ops by the relaxation's weights; batch norm after each state."""

    def __init__(self, relax, hidden: int, nodes: int, dropouth: float, dropoutx: float):
        super().__init__(hidden, nodes, dropouth, dropoutx)
        self.relax = relax
        self.ws = nn.ParameterList([_uniform(hidden, 2 * hidden) for _ in range(nodes)])
        self.bn = nn.BatchNorm1d(hidden, affine=False)
        self.ops = relax.space.ops["recurrent"]
        self._mixing = None

    def forward(self, inputs, hidden):
        m = self.relax.mixing("recurrent", 0)  # once per sequence: the same mixing at every time step
        if m.edge_weights is not None:
            raise ValueError("the recurrent cell has no per-edge weights")
        active = torch.zeros_like(m.weights, dtype=torch.bool)
        for e, ops in enumerate(m.active):
            active[e, ops] = True
        self._mixing = (m.weights * active, active.any(0).tolist())
        try:
            return super().forward(inputs, hidden)
        finally:
            self._mixing = None

    def step(self, x, h_prev, x_mask, h_mask):
        weights, used = self._mixing
        states = self.bn(self.initial_state(x, h_prev, x_mask, h_mask))[None]
        offset = 0
        for i in range(self.nodes):
            w = weights[offset : offset + i + 1]
            ops = [(w[:, k], ACTIVATIONS[name]) for k, name in enumerate(self.ops) if name != "none" and used[k]]
            s = highway(states, self.ws[i], h_mask, ops) if ops else torch.zeros_like(states[0])
            states = torch.cat([states, self.bn(s)[None]])
            offset += i + 1
        return states[1:].mean(0)


class DerivedCell(RecurrentCell):
    """The genotype's cell: node i = one highway step from one earlier state with one activation; no batch norm."""

    def __init__(self, genotype, hidden: int, dropouth: float, dropoutx: float):
        super().__init__(hidden, len(genotype.recurrent), dropouth, dropoutx)
        self.genotype = genotype
        self.ws = nn.ParameterList([_uniform(hidden, 2 * hidden) for _ in genotype.recurrent])

    def step(self, x, h_prev, x_mask, h_mask):
        states = [self.initial_state(x, h_prev, x_mask, h_mask)]
        for w, (op, j) in zip(self.ws, self.genotype.recurrent):
            states.append(highway(states[j][None], w, h_mask, [(torch.ones(1, device=w.device), ACTIVATIONS[op])]))
        return torch.stack([states[i] for i in self.genotype.concat]).mean(0)


class LanguageModel(nn.Module):
    """Embedding -> recurrent cell -> tied decoder; ``forward(x, hidden) -> (logits, last hidden, AR + TAR)``."""

    def __init__(self, cell: RecurrentCell, vocab: int, hidden: int, dropouts: dict, ar: float = 0.0, tar: float = 0.0):
        super().__init__()
        self.encoder = nn.Embedding(vocab, hidden)
        nn.init.uniform_(self.encoder.weight, -INIT_RANGE, INIT_RANGE)
        self.cell = cell
        self.decoder = nn.Linear(hidden, vocab)
        self.decoder.weight = self.encoder.weight  # weight tying
        nn.init.zeros_(self.decoder.bias)
        self.hidden, self.vocab = hidden, vocab
        self.dropout, self.dropouti, self.dropoute = dropouts["dropout"], dropouts["dropouti"], dropouts["dropoute"]
        self.ar, self.tar = ar, tar

    def locked(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """One dropout mask per sequence, shared by its time steps."""
        if not self.training or not p:
            return x
        return x * keep_mask((1, *x.shape[1:]), p, x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        w = self.encoder.weight
        if self.training and self.dropoute:
            w = w * keep_mask((w.shape[0], 1), self.dropoute, w)  # a dropped word is dropped everywhere
        return F.embedding(x, w)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None):
        if hidden is None:
            hidden = self.encoder.weight.new_zeros(x.shape[1], self.hidden)
        raw = self.cell(self.locked(self.embed(x), self.dropouti), hidden)
        out = self.locked(raw, self.dropout)
        logits = self.decoder(out.reshape(-1, self.hidden))
        penalty = 0.0
        if self.training:
            if self.ar:
                penalty = penalty + self.ar * out.pow(2).mean()
            if self.tar and raw.shape[0] > 1:
                penalty = penalty + self.tar * (raw[1:] - raw[:-1]).pow(2).mean()
        return logits, raw[-1], penalty
