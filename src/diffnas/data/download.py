"""``--download``: fetch MNIST, Fashion-MNIST, CIFAR-10 or CIFAR-100 from where their authors publish them.

Every file is checked against its published MD5 (the ones torchvision lists); a download
cut short is kept as ``FILE.part`` and continued with an HTTP Range request; a progress
bar shows each file. The files go to the folder given (``--data-dir``), else to
``$DIFFNAS_DATA/<name>``, else to ``~/.cache/diffnas/data/<name>``; files already there
and intact are not fetched again. The readers then read that folder as any other.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import DataError
from .common import cache_dir


@dataclass(frozen=True)
class Source:
    mirrors: tuple[str, ...]  # base URLs, tried in order: the authors' first
    files: dict  # file name -> MD5
    extract: bool = False  # a tar.gz to unpack in place


SOURCES = {
    "mnist": Source(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": Source(
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": Source(
        ("https://www.cs.toronto.edu/~kriz/",), {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}, True
    ),
    "cifar100": Source(
        ("https://www.cs.toronto.edu/~kriz/",), {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}, True
    ),
}
CHUNK = 1 << 16


def download_folder(name: str, data_dir=None) -> Path:
    """Where ``name`` is downloaded to: ``data_dir``, ``$DIFFNAS_DATA/<name>`` or ``~/.cache/diffnas/data/<name>``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("DIFFNAS_DATA")
    return (Path(env).expanduser() if env else cache_dir() / "data") / name


def download_dataset(name: str, data_dir=None, progress: bool = True) -> Path:
    """Fetch (or finish fetching) data set ``name`` into its folder; returns the folder."""
    if name not in SOURCES:
        raise DataError(f"{name}: --download knows {', '.join(SOURCES)}; put the files in --data-dir yourself")
    source, folder = SOURCES[name], download_folder(name, data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{folder}: cannot create the download folder ({e.strerror})") from None
    for filename, md5 in source.files.items():
        path = folder / filename
        if not (path.is_file() and _md5(path) == md5):
            _fetch_any([m + filename for m in source.mirrors], path, md5, progress)
        if source.extract:
            _extract(path, folder)
    return folder


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_any(urls: list[str], path: Path, md5: str, progress: bool) -> None:
    """The first mirror that answers; a network error on every mirror is one line (the part file stays)."""
    errors = []
    for url in urls:
        try:
            return fetch(url, path, md5, progress)
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
    raise DataError(f"cannot download {path.name} ({'; '.join(errors)}); run again to continue where it stopped")


def fetch(url: str, path: Path, md5: str, progress: bool = True) -> None:
    """Download ``url`` to ``path`` through ``path.part``, continuing a part file with a Range request;
    the finished file must have ``md5`` (a mismatch deletes it and is an error)."""
    part = path.with_name(path.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: nothing left past ``have``, the part is whole
            raise
        response = None
    if response is not None:
        with response:
            if response.status != 206:  # the server sent the whole file: start over
                have = 0
            size = int(response.headers.get("Content-Length") or 0) + have
            bar = tqdm(
                total=size or None, initial=have, unit="B", unit_scale=True, desc=path.name, disable=not progress
            )
            with bar, open(part, "ab" if have else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
    got = _md5(part)
    if got != md5:
        part.unlink()
        raise DataError(f"{url}: checksum mismatch (MD5 {got}, expected {md5}); the file was deleted, run again")
    os.replace(part, path)


def _extract(archive: Path, folder: Path) -> None:
    """Unpack a tar archive in ``folder`` once (a marker file says it was unpacked whole)."""
    done = folder / f".{archive.name}.extracted"
    if done.is_file():
        return
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive}: cannot unpack ({e})") from None
    done.touch()
