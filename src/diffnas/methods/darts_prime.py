"""DARTS-PRIME (Maile et al., AAAI 2022): DARTS first order + the FIMT schedule + proximity regularization.

The method adds no step logic of its own: it is DARTS's step with the paper's parts as
defaults, so every ablation is the same parts on another method (``--method darts
--schedule fimt``, ``--reg proximity``, ``--relaxation crb``, ``--reg admm``).
"""

from __future__ import annotations

from .darts import DARTS


class DARTSPrime(DARTS):
    name = "darts-prime"
    help = "DARTS-PRIME: DARTS 1st order + Fisher-informed (FIMT) schedule + proximity regularization"
    defaults = {
        # r = 10 weight steps per architecture step: the val split is 1/(1 + r) of the training set
        "search": {"schedule": "fimt", "train_portion": 10 / 11},
        "reg": {"proximity": 0.1},
    }
