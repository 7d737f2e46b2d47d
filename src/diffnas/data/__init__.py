"""Image data sets (IDX, CIFAR pickles, image folders) and deterministic batch streams."""

from .batches import Augment, BatchStream, check_batch_size, eval_batches, split_indices
from .dataset import DATASETS, ImageDataset, load_dataset
from .download import download_dataset, download_folder

__all__ = [
    "DATASETS",
    "Augment",
    "BatchStream",
    "ImageDataset",
    "check_batch_size",
    "download_dataset",
    "download_folder",
    "eval_batches",
    "load_dataset",
    "split_indices",
]
