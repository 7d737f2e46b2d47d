"""The `diffnas` command: parse flags into a config, call the engine, print a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from . import api
from .config import PRESETS, parse_set
from .errors import DiffnasError

SCALE_FLAGS = ("epochs", "batch_size", "channels", "layers")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default; options whose default is the config's say it in their help."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _globals(suppress: bool) -> argparse.ArgumentParser:
    """The global options, accepted before or after the sub-command (``suppress``: a sub-command's copy
    leaves the value given before it alone)."""
    p = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    p.add_argument("--debug", action="store_true", default=default, help="full tracebacks instead of one-line errors")
    return p


def _defaults():
    """The config a bare ``diffnas search`` resolves to (shared keys and the darts space's protocol)."""
    from .catalog import resolve

    return resolve(forced=False)  # (what a user's bare command gets, also under the README test)


def _preset_lines() -> list[str]:
    """What each preset sets, one line per preset."""
    from .catalog import _flat

    return [f"{name:6s} " + " ".join(f"{k}={v}" for k, v in _flat(PRESETS[name]).items()) for name in PRESETS]


def _add_common(p: argparse.ArgumentParser, scale: str | None, cfg):
    p.add_argument("--dataset", help="fashion-mnist (default) | mnist | cifar10 | cifar100 | imagefolder")
    p.add_argument(
        "--data-dir", help="folder holding the data set's files (default: the data set's usual place; see README)"
    )
    p.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="fetch a missing mnist, fashion-mnist, cifar10 or cifar100 into --data-dir "
        "(default: $DIFFNAS_DATA or ~/.cache/diffnas/data), checksum-verified and resumable",
    )
    p.add_argument("--subset", type=int, help="use only N training images (default: all)")
    p.add_argument("--image-size", type=int, help="resize images to S x S once at load (default: as stored)")
    p.add_argument("--seed", type=int, help=f"(default: {cfg.seed})")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto, CUDA when present)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="auto (default): bf16 autocast on CUDA only")
    p.add_argument("--config", help="YAML file of config keys (see README)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="named small settings for a first run (default: none, the papers' scale); "
        "`diffnas presets` lists what each sets",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch lines stay)")
    p.add_argument("--benchmark", metavar="CSV", help="look architectures up in this table (benchmark.file)")
    if scale:
        for flag in SCALE_FLAGS:
            default = cfg[scale][flag]
            p.add_argument(
                f"--{flag.replace('_', '-')}",
                type=int,
                dest=flag,
                help=f"{scale}.{flag} (default: {default}, or the method's paper value)",
            )


def _add_parts(p: argparse.ArgumentParser):
    """The parts a search combines, swappable under any method."""
    p.add_argument("--schedule", help="when architecture steps happen: alternate | every:K | ... (search.schedule)")
    p.add_argument("--relaxation", help="edge relaxation replacing the method's own (search.relaxation)")
    p.add_argument("--activation", choices=("softmax", "crb"), help="DARTS-PRIME's name for --relaxation softmax|crb")
    p.add_argument("--reg", action="append", default=[], metavar="NAME[=WEIGHT]", help="add a regularizer (repeatable)")


def _parts(args) -> tuple[dict, dict]:
    search = {k: getattr(args, k) for k in ("schedule", "relaxation") if getattr(args, k, None)}
    if getattr(args, "activation", None):
        search.setdefault("relaxation", args.activation)
    reg = {}
    for item in getattr(args, "reg", None) or []:
        name, has_value, value = item.partition("=")
        reg[name.strip()] = yaml.safe_load(value) if has_value else True
    return search, reg


def _overrides(args, scale: str | None) -> dict:
    keys = ("dataset", "data_dir", "download", "subset", "image_size", "seed", "device", "precision")
    top = {k: getattr(args, k, None) for k in keys}
    out: dict = {k: v for k, v in top.items() if v is not None}
    if getattr(args, "benchmark", None):
        out["benchmark"] = {"file": args.benchmark}
    for k in ("method", "space"):
        if getattr(args, k, None):
            out[k] = getattr(args, k)
    if scale:
        section = {f: getattr(args, f) for f in SCALE_FLAGS if getattr(args, f, None) is not None}
        if getattr(args, "nodes", None) is not None:
            section["nodes"] = args.nodes
        if getattr(args, "protocol", None):
            section["protocol"] = args.protocol
        if section:
            out[scale] = section
    search_parts, reg = _parts(args)
    if search_parts:
        out.setdefault("search", {}).update(search_parts)
    if reg:
        out["reg"] = reg
    sets = parse_set(args.set)
    for k, v in sets.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    cfg = _defaults()
    parser = argparse.ArgumentParser(
        prog="diffnas",
        description="Differentiable neural architecture search.",
        parents=[_globals(suppress=False)],
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"diffnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub_parser = sub.add_parser

    def add_parser(name, **kwargs):
        return sub_parser(name, parents=[_globals(suppress=True)], formatter_class=_Help, **kwargs)

    sub.add_parser = add_parser  # every sub-command, also one added later, takes the global options

    def add_out(p, what: str):
        p.add_argument("--out", help=f"run directory{what} (default: runs/<kind>-<method>-<data set>-<time>)")
        p.add_argument(
            "--force", action="store_true", help="reuse an --out that holds a finished or stopped run, replacing it"
        )

    p = sub.add_parser("search", help="search an architecture; writes a run directory")
    p.add_argument("--method", help=f"search method (default: {cfg.method}; see `diffnas methods`)")
    p.add_argument("--space", help="search space (default: the method's; see `diffnas spaces`)")
    p.add_argument("--nodes", type=int, help=f"intermediate nodes per cell (default: {cfg.search.nodes})")
    add_out(p, "")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed search")
    _add_parts(p)
    _add_common(p, "search", cfg)

    p = sub.add_parser("train", help="retrain a genotype from scratch and report its test accuracy")
    p.add_argument("--genotype", "--widths", help="a genotype.json or widths file, or a search, train or run directory")
    add_out(p, "")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed retraining")
    p.add_argument("--protocol", help="the space's named retraining protocol: cifar (default) | imagenet | imagenet-pc")
    _add_common(p, "train", cfg)

    p = sub.add_parser("run", help="search, derive, retrain and report in one go")
    p.add_argument("--method", help=f"search method (default: {cfg.method}; see `diffnas methods`)")
    p.add_argument("--space", help="search space (default: the method's; see `diffnas spaces`)")
    add_out(p, ": search/ and train/ inside")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    _add_parts(p)
    _add_common(p, None, cfg)

    p = sub.add_parser("sweep", help="many trials (methods x seeds x grid values), each a `run`; local pool or Ray")
    p.add_argument("--out", required=True, help="sweep directory: a run directory per trial, trials.jsonl, summary.csv")
    p.add_argument("--method", help="comma-separated methods")
    p.add_argument("--seeds", help="comma-separated seeds")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="config key and its values")
    p.add_argument("--workers", type=int, help="trials at a time (local: default 1; ray: default all)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster to connect to (default: RAY_ADDRESS or a new local Ray)")
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--cpus-per-trial", type=float, default=1, help="also the trial's OMP_NUM_THREADS")
    p.add_argument("--search-only", action="store_true", help="each trial is a `search`, no retraining")
    p.add_argument("--space")
    _add_parts(p)
    _add_common(p, None, cfg)

    p = sub.add_parser("subset", help="a seeded per-class sample of DIR/train as a file list (not copies)")
    p.add_argument("--data-dir", required=True, help="the image folder (DIR/train/<class>/...)")
    p.add_argument("--per-class", type=float, required=True, help="fraction of each class's images, e.g. 0.1")
    p.add_argument("--exclude", help="a file list whose images are never drawn (a disjoint second sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the file list to write (search.train_list / search.val_list)")

    p = sub.add_parser("show", help="print a genotype and draw its cells (and the architecture weights of a run)")
    p.add_argument("target", help="a genotype.json, or a search, train or run directory")
    p.add_argument("--benchmark", metavar="CSV", help="look the architecture up in this table")
    p.add_argument("--arch-column", default="arch", help="the table's column of architecture strings")
    p.add_argument("--metrics", help="comma-separated metric columns (default: all the others)")

    p = sub.add_parser(
        "benchmark-convert", help="a benchmark table (CSV) from the NATS-Bench / NAS-Bench-201 files (extra nb201)"
    )
    p.add_argument("source", help="NATS-Bench topology files (nats) or NAS-Bench-201's .pth (nb201)")
    p.add_argument("--out", required=True, help="the CSV to write")
    p.add_argument("--api", choices=("nats", "nb201"), default="nats", help="nats: nats_bench; nb201: nas_201_api")
    p.add_argument("--hp", default="200", help="the benchmark's training length whose results to take")

    p = sub.add_parser("report", help="write the HTML report of a run or sweep directory (also written after each)")
    p.add_argument("target", help="a run directory (search, train or run) or a sweep directory")
    p.add_argument("--out", help="the HTML file (default: TARGET/report.html)")

    p = sub.add_parser("bench", help="time and memory of one search step per method, against darts")
    p.add_argument(
        "--methods",
        default="darts",
        help="comma-separated method names (unknown ones are skipped); NAME[KEY=VALUE,...]: with its own overrides",
    )
    p.add_argument("--space", help="search space for every method (default: each method's own)")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--classes", type=int, help="classes, or words of a text space (default: 10; text: 10000, PTB's)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per method (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=1, help="alternate the methods this many times; medians")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="time all methods in one process, a step of each in turn (a drifting machine slows them alike); "
        "memory still from a process per method",
    )
    p.add_argument("--epoch", type=int, help="the epoch the steps belong to (default: each method's steady state)")
    p.add_argument(
        "--saved-steps",
        type=int,
        default=2,
        help="steps after the timed ones that count the tensors saved for backward per phase (0: none)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    p.add_argument("--reference", metavar="PATH", help="also time the reference DARTS step script (CPU)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every method")
    p.add_argument("--out", help="write the results as JSON here")

    sub.add_parser("methods", help="list the search methods")
    sub.add_parser("spaces", help="list the search spaces")
    sub.add_parser(
        "presets", help="what each --preset sets: " + "; ".join(line.split(" ", 1)[0] for line in _preset_lines())
    )
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args, parser)
    except DiffnasError as e:
        if args.debug:
            raise
        print(f"diffnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ndiffnas: interrupted; continue with --resume RUN_DIR (the last finished epoch is saved)", file=sys.stderr
        )
        return 130


def _dispatch(args, parser) -> int:
    if args.command == "methods":
        for m in api.list_methods():
            print(f"{m['name']:14s} {m['help']}")
            print(f"{'':14s}   relaxation {m['relaxation']} (works with {', '.join(m['relaxations'])})")
            print(f"{'':14s}   space {m['space']} (works on {', '.join(m['spaces'])})")
        return 0
    if args.command == "spaces":
        for sp in api.list_spaces():
            print(f"{sp['name']:14s} {sp['help']}")
            print(f"{'':14s}   task {sp['task']}; data sets {', '.join(sp['datasets'])}")
            print(f"{'':14s}   methods {', '.join(sp['methods'])}")
            print(f"{'':14s}   relaxations {', '.join(sp['relaxations'])}")
            print(f"{'':14s}   regularizers {', '.join(sp['regularizers'])}")
        return 0
    if args.command == "presets":
        print("\n".join(_preset_lines()))
        print("(--set KEY=VALUE or a flag after --preset changes any of them)")
        return 0
    if args.command == "show":
        for line in api.show(args.target, args.benchmark, args.arch_column, args.metrics):
            print(line)
        return 0
    if args.command == "benchmark-convert":
        n = api.convert_benchmark(
            args.source, args.out, api=args.api, hp=args.hp, log=lambda line: print(line, file=sys.stderr)
        )
        print(f"wrote {n} architectures to {args.out}")
        return 0

    if args.command == "subset":
        n = api.subset(args.data_dir, args.per_class, args.out, seed=args.seed, exclude=args.exclude)
        print(f"wrote {n} images to {args.out}")
        return 0
    if args.command == "report":
        print(api.report(args.target, args.out))
        return 0
    if args.command == "bench":
        return _bench(args)
    if args.command == "sweep":
        return _sweep(args)

    progress = not args.no_progress
    if args.command == "search":
        overrides = _overrides(args, "search")
        result = api.search(
            out=args.out,
            resume=args.resume,
            config=args.config,
            preset=args.preset,
            progress=progress,
            force=args.force,
            **overrides,
        )
        _print(api.summary_lines(search=result))
        _print(_next_steps(parser, result.run_dir, args.preset, searched=True))
    elif args.command == "train":
        if not (args.genotype or args.resume):
            parser.error("train needs --genotype (or --resume RUN_DIR)")
        overrides = _overrides(args, "train")
        result = api.train(
            args.genotype,
            out=args.out,
            resume=args.resume,
            config=args.config,
            preset=args.preset,
            progress=progress,
            force=args.force,
            **overrides,
        )
        _print(api.summary_lines(train=result))
        _print(_next_steps(parser, result.run_dir, args.preset))
    elif args.command == "run":
        overrides = _overrides(args, None)
        s, t = api.run(
            out=args.out,
            resume=args.resume,
            config=args.config,
            preset=args.preset,
            progress=progress,
            force=args.force,
            **overrides,
        )
        _print(api.summary_lines(search=s, train=t))
        _print(f"pictures and files: {Path(t.run_dir).parent}")
        _print(_next_steps(parser, Path(t.run_dir).parent, args.preset))
    return 0


def _next_steps(parser, run_dir, preset: str | None, searched: bool = False) -> str:
    """What a user does next with a finished run: retrain (larger), look at the pictures and curves, the
    report; only commands this diffnas has."""
    run_dir = Path(run_dir)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    lines = ["next:"]
    if searched and preset:
        lines.append(f"  retrain it:     diffnas train --genotype {run_dir} --preset {preset} --out {run_dir}-train")
    if preset or searched:
        lines.append(
            f"  retrain larger: diffnas train --genotype {run_dir} --out {run_dir}-full "
            "(the space's paper protocol, e.g. DARTS: 36 channels, 20 cells, 600 epochs: a GPU's day)"
        )
    pictures = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.png"))
    if pictures:
        lines.append(f"  pictures:       {run_dir}/ {', '.join(pictures)}")
    if any(run_dir.rglob("tb")):
        lines.append(f"  curves:         tensorboard --logdir {run_dir}")
    if "report" in commands:
        lines.append(f"  report:         diffnas report {run_dir}")
    lines.append(f"  epoch by epoch: {', '.join(str(p) for p in sorted(run_dir.rglob('log.txt')))}")
    return "\n".join(lines)


def _print(text: str) -> None:
    """Summaries: printed once, by rank 0 of a multi-process (torchrun) run."""
    from .runtime.distributed import is_main

    if is_main():
        print(text)


def _sweep(args) -> int:
    from .sweep import format_table, parse_list

    overrides = _overrides(args, None)
    method, seed = overrides.pop("method", None), overrides.pop("seed", None)
    try:
        result = api.sweep(
            args.out,
            methods=parse_list(args.method) or ([method] if method else None),
            seeds=parse_list(args.seeds, int) or ([seed] if seed is not None else None),
            grid=args.grid,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            search_only=args.search_only,
            config=args.config,
            preset=args.preset,
            **overrides,
        )
    except KeyboardInterrupt:
        print("\ndiffnas: sweep interrupted; run the same command again to finish it", file=sys.stderr)
        return 130
    print(format_table(result.records))
    print(f"trials: {result.out / 'trials.jsonl'}, {result.out / 'summary.csv'}")
    return 2 if result.failed else 0


def _bench(args) -> int:
    import json

    from .bench import format_table, parse_methods, run_bench

    methods = parse_methods(args.methods)
    report = run_bench(
        methods,
        rounds=args.rounds,
        reference=args.reference,
        log=lambda line: print(line, file=sys.stderr),
        interleave=args.interleave,
        space=args.space,
        channels=args.channels,
        layers=args.layers,
        batch_size=args.batch_size,
        image_size=args.image_size,
        in_channels=args.in_channels,
        num_classes=args.classes,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        sets=parse_set(args.set),
        epoch=args.epoch,
        saved_steps=args.saved_steps,
    )
    print(format_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
