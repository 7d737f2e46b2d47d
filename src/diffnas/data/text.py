"""Word-level text corpora (Penn Treebank, WikiText-2, any folder of the same three files) and their streams.

A corpus folder holds ``train.txt``, ``valid.txt`` and ``test.txt`` (or Mikolov's names
``ptb.train.txt`` ...), one sentence per line, words separated by spaces; a ``.zip`` of
such files reads the same (entries under ``__MACOSX/`` are ignored). As in the DARTS
code, every line ends with an ``<eos>`` token and the vocabulary is the training text's
words in order of first appearance. A word in valid/test never seen in train becomes
``<unk>`` when the training text has that token, and is an error when it has not.

``batchify`` cuts a token sequence into ``batch_size`` contiguous streams (a [N, B]
matrix, column b is stream b); ``TextStream`` walks such a matrix in windows of about
``bptt`` tokens and carries the recurrent state from one window to the next (truncated
back-propagation through time): a ``TextBatch`` is the window, its targets (the
next tokens) and the state it starts from; the model's state at its end is handed back
with ``TextBatch.carry``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError

EOS, UNK = "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")
TEXT_DATASETS = {
    "ptb": "Penn Treebank, word level (Mikolov): ptb.{train,valid,test}.txt in --data-dir (a folder or ptb.zip)",
    "text": "any word-level corpus: train.txt, valid.txt, test.txt in --data-dir (e.g. WikiText-2)",
}


@dataclass
class Corpus:
    """Token ids of the three splits, and the vocabulary (id -> word)."""

    name: str
    words: list[str]
    train: torch.Tensor  # int64 [N]
    valid: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.words)


def _split_text(name: str, data_dir) -> dict[str, tuple[str, str]]:
    """{split: (text, where)} from a folder or a zip of the three files."""
    if data_dir is None or str(data_dir) == "":
        raise DataError(f"{name}: no data folder given (expected train/valid/test .txt files; set --data-dir)")
    path = Path(data_dir).expanduser()
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = {Path(m).name: m for m in z.namelist() if not m.startswith("__MACOSX/") and not m.endswith("/")}
            files = {s: _pick(name, members, str(path), s) for s in SPLITS}
            return {s: (z.read(m).decode("utf-8"), f"{path}:{m}") for s, m in files.items()}
    if not path.is_dir():
        raise DataError(f"{name}: no such folder {path} (expected train/valid/test .txt files; set --data-dir)")
    members = {p.name: p for p in path.iterdir() if p.is_file()}
    out = {}
    for s in SPLITS:
        p = _pick(name, members, str(path), s)
        try:
            out[s] = (p.read_text(encoding="utf-8"), str(p))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{name}: cannot read {p} ({type(e).__name__}); expected UTF-8 text") from None
    return out


def _pick(name: str, members: dict, where: str, split: str):
    for candidate in (f"{split}.txt", f"ptb.{split}.txt"):
        if candidate in members:
            return members[candidate]
    raise DataError(f"{name}: no {split}.txt (or ptb.{split}.txt) in {where}")


def tokens(text: str) -> list[str]:
    """The words of ``text``, an ``<eos>`` after every line (blank lines included, as the reference reads them)."""
    out = []
    for line in text.splitlines():
        out += line.split() + [EOS]
    return out


def load_corpus(name: str, data_dir) -> Corpus:
    """Read the three splits; one-line errors for a missing or empty file and for unknown words."""
    texts = _split_text(name, data_dir)
    words: dict[str, int] = {}
    split_words = {}
    for s in SPLITS:
        text, where = texts[s]
        toks = tokens(text)
        if not any(t != EOS for t in toks):
            raise DataError(f"{name}: {where} has no words (expected one sentence per line)")
        split_words[s] = (toks, where)
    for t in split_words["train"][0]:
        words.setdefault(t, len(words))
    ids = {}
    for s, (toks, where) in split_words.items():
        unknown = next((t for t in toks if t not in words), None)
        if unknown is not None and UNK not in words:
            raise DataError(
                f"{name}: the word {unknown!r} in {where} never occurs in the training text, which has no "
                f"{UNK} token to stand for it"
            )
        unk = words.get(UNK, -1)
        ids[s] = torch.tensor([words.get(t, unk) for t in toks], dtype=torch.long)
    return Corpus(name, list(words), ids["train"], ids["valid"], ids["test"])


def batchify(data: torch.Tensor, batch_size: int, what: str = "text") -> torch.Tensor:
    """[N] tokens -> [N // B, B]: B contiguous streams side by side (the tail that does not fill a row is cut)."""
    rows = len(data) // batch_size
    if rows < 2:
        raise DataError(
            f"{what}: {len(data)} tokens are too few for {batch_size} streams of at least 2 tokens "
            "(lower the batch size)"
        )
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous()


@dataclass
class TextBatch:
    """A window of a batchified stream: inputs [L, B], targets [L * B] (the next tokens), the state it starts from."""

    x: torch.Tensor
    y: torch.Tensor
    hidden: torch.Tensor | None  # None: the stream's start (zeros)
    lr_scale: float  # L / bptt: the reference scales the step's learning rate by the window length
    stream: TextStream | None = None
    regularize: bool = False  # a training window: its loss has the AR/TAR penalty

    def __getitem__(self, i):  # (x, y) like an image batch, for code that reads batch[1]
        return (self.x, self.y)[i]

    def carry(self, hidden: torch.Tensor) -> None:
        """The state at the window's end: where the stream's next window starts (detached)."""
        if self.stream is not None:
            self.stream.hidden = hidden.detach()


def windows(data: torch.Tensor, bptt: int):
    """(x, y) windows of ``bptt`` tokens over a batchified [N, B] matrix, in order (evaluation)."""
    for i in range(0, data.shape[0] - 1, bptt):
        n = min(bptt, data.shape[0] - 1 - i)
        yield data[i : i + n], data[i + 1 : i + 1 + n].reshape(-1)


class TextStream:
    """Resumable windows over a batchified matrix, with the recurrent state carried from window to window.

    Window lengths follow the reference: ``bptt`` with probability 0.95, else ``bptt / 2``,
    then (``jitter``, retraining only) ``max(5, N(len, 5))`` capped at ``bptt + max_extra``;
    drawn from torch's global RNG, so a restored RNG state redraws them. The stream wraps to
    its start (and a zero state) when fewer than two tokens are left. ``part=(rank, world)``:
    this rank's contiguous share of the streams (columns).
    """

    def __init__(
        self,
        data: torch.Tensor,
        bptt: int,
        *,
        jitter: bool = False,
        max_extra: int = 20,
        regularize: bool = False,
        device="cpu",
        part: tuple[int, int] | None = None,
    ):
        if part is not None and part[1] > 1:
            rank, world = part
            per = data.shape[1] // world
            if per == 0:
                raise DataError(f"{data.shape[1]} text streams cannot be split over {world} processes")
            data = data[:, rank * per : (rank + 1) * per]
        self.data = data.to(device)
        self.bptt, self.jitter, self.max_extra = int(bptt), bool(jitter), int(max_extra)
        self.regularize = regularize
        if self.bptt < 1:
            raise DataError(f"bptt must be a positive number of tokens, got {bptt}")
        self.steps_per_epoch = len(range(0, self.data.shape[0] - 1, self.bptt))
        self.pos = 0
        self.hidden: torch.Tensor | None = None

    def window_length(self) -> int:
        base = self.bptt if torch.rand(()).item() < 0.95 else self.bptt / 2
        if self.jitter:
            base = max(5, int(torch.normal(float(base), 5.0, ()).item()))
            return min(base, self.bptt + self.max_extra)
        return max(1, int(base))

    def next(self) -> TextBatch:
        if self.pos >= self.data.shape[0] - 2:
            self.pos, self.hidden = 0, None
        length = self.window_length()
        n = min(length, self.data.shape[0] - 1 - self.pos)
        i = self.pos
        self.pos += n
        x, y = self.data[i : i + n], self.data[i + 1 : i + 1 + n].reshape(-1)
        return TextBatch(x, y, self.hidden, length / self.bptt, self, self.regularize)

    __next__ = next

    def reset(self) -> None:
        """Back to the first window and a zero state (the reference does this at every epoch's start)."""
        self.pos, self.hidden = 0, None

    def state_dict(self) -> dict:
        return {"pos": self.pos, "hidden": self.hidden}

    def load_state_dict(self, d: dict) -> None:
        pos = int(d["pos"])
        if not 0 <= pos < self.data.shape[0]:
            raise ValueError(f"bad TextStream state: position {pos} of {self.data.shape[0]}")
        hidden = d.get("hidden")
        self.pos, self.hidden = pos, None if hidden is None else hidden.to(self.data.device)
