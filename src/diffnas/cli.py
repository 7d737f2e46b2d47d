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


def _add_common(p: argparse.ArgumentParser, scale: str | None):
    p.add_argument("--dataset", help="fashion-mnist (default) | mnist | cifar10 | cifar100 | imagefolder")
    p.add_argument("--data-dir", help="folder holding the data set's files")
    p.add_argument("--subset", type=int, help="use only N training images")
    p.add_argument("--image-size", type=int, help="resize images to S x S once at load")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="auto: bf16 autocast on CUDA only")
    p.add_argument("--config", help="YAML file of config keys (see README)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named set of small settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--benchmark", metavar="CSV", help="look architectures up in this table (benchmark.file)")
    if scale:
        for flag in SCALE_FLAGS:
            p.add_argument(f"--{flag.replace('_', '-')}", type=int, dest=flag, help=f"{scale}.{flag}")


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
    keys = ("dataset", "data_dir", "subset", "image_size", "seed", "device", "precision")
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
    parser = argparse.ArgumentParser(prog="diffnas", description="Differentiable neural architecture search.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="search an architecture; writes a run directory")
    p.add_argument("--method", help="search method (see `diffnas methods`)")
    p.add_argument("--space", help="search space (see `diffnas spaces`)")
    p.add_argument("--nodes", type=int, help="intermediate nodes per cell")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed search")
    _add_parts(p)
    _add_common(p, "search")

    p = sub.add_parser("train", help="retrain a genotype from scratch and report its test accuracy")
    p.add_argument("--genotype", help="genotype.json or a search run directory")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed retraining")
    _add_common(p, "train")

    p = sub.add_parser("run", help="search, derive, retrain and report in one go")
    p.add_argument("--method")
    p.add_argument("--space")
    p.add_argument("--out", help="run directory (search/ and train/ inside)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    _add_parts(p)
    _add_common(p, None)

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
    _add_common(p, None)

    p = sub.add_parser("show", help="print a genotype and draw its cells (and the architecture weights of a run)")
    p.add_argument("target", help="a run directory or a genotype.json")
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
            out=args.out, resume=args.resume, config=args.config, preset=args.preset, progress=progress, **overrides
        )
        _print(api.summary_lines(search=result))
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
            **overrides,
        )
        _print(api.summary_lines(train=result))
    elif args.command == "run":
        overrides = _overrides(args, None)
        s, t = api.run(
            out=args.out, resume=args.resume, config=args.config, preset=args.preset, progress=progress, **overrides
        )
        _print(api.summary_lines(search=s, train=t))
        _print(f"pictures and files: {Path(t.run_dir).parent}")
    return 0


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
