"""The search loop: data -> method steps -> per-epoch architecture, logs and checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..config import Config
from ..data import Augment, BatchStream, check_batch_size, eval_batches, split_indices
from ..methods import build_method
from ..runtime import distributed
from ..runtime.rundir import CHECKPOINT, RunDir, seed_everything
from ..spaces import Architecture, load_architecture, space_from_config
from .loop import below_chance_note, check_finite, evaluate_split, load_data, reestimate_bn, resolve_device, run_job
from .resume import fitting, keep_config

LOGS = ("metrics.jsonl", "steps.jsonl", "genotypes.jsonl")


@dataclass
class SearchResult:
    genotype: Architecture
    run_dir: Path
    records: list
    val_acc: float
    seconds: float
    peak_memory_mb: float


class SearchJob:
    def __init__(self, cfg: Config, run: RunDir, progress: bool = True):
        self.cfg, self.run, self.progress = cfg, run, progress
        s = cfg.search
        self.device = resolve_device(cfg.device)
        distributed.check_batch_size(s.batch_size, "search.batch_size")
        seed_everything(cfg.seed)
        data = load_data(cfg)
        self.data = data
        train_idx, val_idx = split_indices(len(data.train_y), s.train_portion, cfg.seed)
        check_batch_size(s.batch_size, "search.batch_size", train_split=len(train_idx), val_split=len(val_idx))
        pad = s.crop_padding if s.crop_padding is not None else data.image_size // 8
        augment = Augment(crop_padding=pad, flip=data.flip, cutout=s.cutout)
        part = (distributed.rank(), distributed.world_size())
        common = dict(mean=data.mean, std=data.std, augment=augment, device=self.device, part=part)
        self.train = BatchStream(data.train_x, data.train_y, train_idx, s.batch_size, seed=cfg.seed, **common)
        self.val = BatchStream(data.train_x, data.train_y, val_idx, s.batch_size, seed=cfg.seed + 1, **common)
        self.val_idx, self.train_idx = val_idx, train_idx
        self.space = space_from_config(cfg)
        self.method = build_method(cfg, self.space, data.in_channels, data.num_classes, self.device)
        self.epochs = s.epochs
        self.steps_per_epoch = self.train.steps_per_epoch
        self.bn_batches = s.get("bn_batches", 0)  # absent in runs of earlier versions
        self._short = ""  # the genotype of the last epoch, in short form

    def size_line(self) -> str:
        params = sum(p.numel() for net in self.method.modules() for p in net.parameters()) / 1e6
        s, d = self.cfg.search, self.data
        return (
            f"search: {self.cfg.method} on {d.name} ({len(self.train_idx)} train + {len(self.val_idx)} val images, "
            f"{d.image_size}x{d.image_size}), supernet {params:.2f} M parameters ({s.channels} channels, "
            f"{s.layers} cells), {self.steps_per_epoch} steps/epoch x {self.epochs} epochs, on {self.device}"
        )

    def epoch_note(self, record: dict) -> str:
        note = below_chance_note(record.get("val_acc"), self.data.num_classes, "search", self.bn_batches)
        return " | ".join(x for x in (self._short, note) if x)

    def _bn_batches(self) -> list:
        """The first ``bn_batches`` batches of the weights' split, unaugmented (the streams stay untouched)."""
        b, d = self.cfg.search.batch_size, self.data
        idx = self.train_idx[: self.bn_batches * b]
        return list(eval_batches(d.train_x[idx], d.train_y[idx], b, mean=d.mean, std=d.std, device=self.device))

    def run_epoch(self, epoch: int, tick=lambda: None) -> dict:
        m = self.method
        steps = self.train.steps_per_epoch
        m.epoch_start(epoch, steps)
        sums: dict = {}
        show = self.progress and distributed.is_main()
        bar = tqdm(range(steps), desc=f"search {epoch + 1}/{self.epochs}", leave=False, disable=not show)
        for i in bar:
            rec = distributed.mean_values(m.step(self.train.next(), self.val), m.data_keys)
            loss = rec.get("loss", 0.0)
            check_finite(loss, f"training loss at epoch {epoch} step {i}", self.run)
            for k in ("loss", "acc", "arch_loss", "arch_acc"):
                if k in rec:
                    sums.setdefault(k, []).append(rec[k])
            self.run.append("steps.jsonl", {"epoch": epoch, "step": i, **rec})
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{rec.get('acc', 0):.2f}")
            tick()
        lr = m.w_lr
        m.epoch_end()
        if self.bn_batches:
            reestimate_bn(m.modules(), self._bn_batches())
        distributed.average_buffers(*m.modules())  # BN running statistics: the same on every rank
        x, y = self.data.train_x[self.val_idx], self.data.train_y[self.val_idx]
        evaluation = evaluate_split(
            m.evaluate,
            x,
            y,
            4 * self.cfg.search.batch_size,
            "val",
            progress=self.progress,
            mean=self.data.mean,
            std=self.data.std,
            device=self.device,
        )
        genotype = m.genotype()
        self._short = genotype.short()
        self.run.append("genotypes.jsonl", {"epoch": epoch, "genotype": genotype.to_dict()})
        if self.run.write:
            genotype.save(self.run.file("genotype.json"))
        means = {f"train_{k}" if k in ("loss", "acc") else k: sum(v) / len(v) for k, v in sums.items()}
        return {
            **means,
            **evaluation,
            "w_lr": lr,
            "arch_steps": m.arch_steps,
            "genotype": str(genotype),
            "ops": {t: list(self.space.ops[t]) for t in self.space.cell_types},
            "arch_weights": dict(m.relax.genotype_weights()),
            "alphas": {t: a.detach() for t, a in m.relax.alphas.items()},
            **m.epoch_record(),
        }

    def state_dict(self) -> dict:
        return {"method": self.method.state_dict(), "train": self.train.state_dict(), "val": self.val.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """The checkpoint's state, with the learning rates and length of this (resumed) config."""
        with fitting(self.run.file(CHECKPOINT)):
            keep_config(self.method, lambda: self.method.load_state_dict(state["method"]))
            self.train.load_state_dict(state["train"])
            self.val.load_state_dict(state["val"])


def search(cfg: Config, out, resume: bool = False, progress: bool = True, callbacks=None) -> SearchResult:
    """Run (or resume) a search; writes the run directory and returns the final architecture."""

    def finish(job, run, records, seconds, peak) -> SearchResult:
        saved = run.write and run.file("genotype.json").is_file()
        genotype = load_architecture(run.file("genotype.json")) if saved else job.method.genotype()
        last = records[-1] if records else {}
        result = SearchResult(genotype, run.path, records, last.get("val_acc", float("nan")), seconds, peak)
        run.write_json(
            "summary.json",
            {
                "kind": "search",
                "method": cfg.method,
                "space": cfg.space,
                "val_acc": result.val_acc,
                "seconds": result.seconds,
                "peak_memory_mb": result.peak_memory_mb,
                "genotype": genotype.to_dict(),
            },
        )
        return result

    result = run_job(lambda run: SearchJob(cfg, run, progress), cfg, out, resume, callbacks, LOGS, finish, "search")
    distributed.barrier()  # every rank sees rank 0's finished run directory before going on
    return result
