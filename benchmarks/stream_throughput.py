"""Images per second of the streaming image-folder pipeline (data/stream.py) at ImageNet's sizes.

Writes ``--images`` JPEGs of 500x375 (ImageNet's typical size) with Pillow, then times training
batches (random resized crop 224, flip, colour jitter) and test batches (resize 256, centre crop
224) for each number of decoding workers; medians of ``--rounds`` in one run.

    python benchmarks/stream_throughput.py --images 256 --workers 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from diffnas.data.stream import ImageStream, load_streamed


def write_folder(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "train" / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (24, 32, 3)).astype(np.uint8)  # smooth content compresses like a photo
        Image.fromarray(base).resize((500, 375), Image.Resampling.BICUBIC).save(folder / f"{i}.jpg", quality=90)
    for k in range(4):
        (root / "test" / f"c{k}").mkdir(parents=True, exist_ok=True)
        (root / "test" / f"c{k}" / "0.jpg").write_bytes((root / "train" / f"c{k}" / f"{k}.jpg").read_bytes())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.images)
        for workers in (int(w) for w in args.workers.split(",")):
            data = load_streamed(root, 224, workers)
            rates = {"train": [], "test": []}
            for r in range(args.rounds):
                stream = ImageStream(data.train, range(len(data.train)), args.batch_size, mean=data.mean,
                                     std=data.std, seed=r, workers=workers)  # fmt: skip
                t0 = time.perf_counter()
                n = sum(len(stream.next()[1]) for _ in range(stream.steps_per_epoch))
                rates["train"].append(n / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                n = sum(
                    len(y) for _, y in data.eval_batches(data.train, range(len(data.train)), args.batch_size, "cpu")
                )
                rates["test"].append(n / (time.perf_counter() - t0))
            print(
                f"workers {workers}: train {statistics.median(rates['train']):.0f} images/s, "
                f"test {statistics.median(rates['test']):.0f} images/s (median of {args.rounds})"
            )


if __name__ == "__main__":
    main()
