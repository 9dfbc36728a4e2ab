"""Sequential image classification from a local .npz (LRA "Image": grayscale CIFAR-10 as a
sequence of pixels; sCIFAR / pixel-MNIST style).

Paper: Tay et al. 2020, "Long Range Arena" (arXiv:2011.04006), task "Image" — CIFAR-10
(Krizhevsky 2009) in grayscale, flattened to 1024 pixel tokens; no 2-D prior is given.
Tests: 2-D spatial structure recovered from a 1-D sequence (a pixel's vertical neighbours are
W tokens away).

Sources (`source`, `path`):
  npz      <path> is an .npz (np.savez) with x_train, y_train, x_test, y_test and optionally
           x_valid, y_valid; or with images, labels (one pool, all splits carved). Images uint8
           [N, H, W] or [N, H, W, C] with C = 1 or 3 (the same H, W, C in every split), labels
           integers [N] >= 0. Only the array headers and labels are read when the task is
           created; the images at the first batch. configs/image_classification.py shows how to
           make one from CIFAR-10's python pickles.
  library  source="tfds:cifar10" (image_field "image") or "hf:cifar10" (image_field "img"); see
           _libraries.py (read offline from the library's cache).
RGB -> grayscale: ITU-R BT.601 luma, round(0.299 R + 0.587 G + 0.114 B), computed exactly as
(299 R + 587 G + 114 B + 500) // 1000 (what PIL's convert("L") and tf.image.rgb_to_grayscale
compute, up to rounding).
Tokens: the grayscale pixels flattened row-major, ids 0..255 (vocab 256); L = H·W, read from the
file (CIFAR: 1024); padding_mask all True. num_classes: the setting, or max label + 1.
Splits: the given train / eval (x_valid) / test; missing ones are carved out of train by a
stable hash of each image's pixels (`valid_fraction`, `test_fraction`; see _files.py).
Batches: per-epoch permutations of train, fixed eval/test order (see _epochs.py).
Cost: loading CIFAR-10 (60k images) takes about a second and holds 60 MB; a batch is O(B·L).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks import _files, _libraries
from attnjax.tasks._epochs import EpochBatches
from attnjax.tasks.base import ClassificationTask, with_defaults

NAME = "image_classification"
EXPECTED = ("an .npz file with x_train, y_train, x_test, y_test (optionally x_valid, y_valid) "
            "or images, labels; images uint8 [N, H, W] or [N, H, W, C] (C = 1 or 3), labels "
            "integers [N]")
PAIRS = {"train": ("x_train", "y_train"), "eval": ("x_valid", "y_valid"),
         "test": ("x_test", "y_test")}
LUMA = (299, 587, 114)  # ITU-R BT.601 weights, per mille


def to_gray(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] from [N, H, W] or [N, H, W, C] (C = 1 or 3; luma as in the docstring)."""
    if images.ndim == 3:
        return np.asarray(images, np.uint8)
    if images.shape[-1] == 1:
        return np.asarray(images[..., 0], np.uint8)
    out = np.empty(images.shape[:3], np.uint8)
    for i in range(0, len(images), 4096):  # chunks bound the uint32 temporaries
        rgb = np.asarray(images[i:i + 4096], np.uint32)  # [n, H, W, 3]
        out[i:i + 4096] = (rgb @ np.array(LUMA, np.uint32) + 500) // 1000
    return out


def _check_images(where: str, shape: tuple, dtype: np.dtype) -> None:
    channels_ok = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))
    if dtype != np.uint8 or not channels_ok:
        raise ConfigError(f"task {NAME}: {where} has images {dtype} {list(shape)}; expected uint8 "
                          "[N, H, W] or [N, H, W, C] with C = 1 or 3 (convert with "
                          ".astype(np.uint8) from 0..255 values)")


def _check_labels(where: str, labels: np.ndarray, n: int) -> None:
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != n:
        raise ConfigError(f"task {NAME}: {where} has labels {labels.dtype} {list(labels.shape)}; "
                          f"expected integers [{n}] (one per image)")
    if n and labels.min() < 0:
        raise ConfigError(f"task {NAME}: {where} has negative labels")


def _npz_layout(path: Path) -> dict[str, tuple[str, str]]:
    """{split: (images key, labels key)} of the splits the .npz gives."""
    keys = set(_files.npz_headers(path))
    if {"x_train", "y_train"} & keys:
        layout = {s: pair for s, pair in PAIRS.items() if set(pair) & keys}
        for pair in layout.values():
            if not set(pair) <= keys:
                raise ConfigError(f"task {NAME}: {path} has {sorted(set(pair) & keys)} without "
                                  f"{sorted(set(pair) - keys)}; expected {EXPECTED}")
        if "train" not in layout:
            raise ConfigError(f"task {NAME}: {path} has no x_train/y_train; expected {EXPECTED}")
        return layout
    if {"images", "labels"} <= keys:
        return {"train": ("images", "labels")}
    raise ConfigError(f"task {NAME}: {path} has keys {sorted(keys)}; expected {EXPECTED}")


@functools.lru_cache(maxsize=4)
def _header(source: str, root: str, stamp: tuple,
            image_field: str, label_field: str) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """(image shape [H, W] or [H, W, C], {split: labels [N]}), checked; cheap for an npz."""
    kind, _ = _libraries.parse_source(NAME, source)
    if kind != "files":
        splits = _source_images(source, root, stamp, image_field, label_field)
        shapes = {s: (x.shape, x.dtype) for s, (x, _) in splits.items()}
        labels = {s: y for s, (_, y) in splits.items()}
    else:
        path = Path(root)
        if path.suffix.lower() != ".npz" or not path.is_file():
            raise ConfigError(f"task {NAME}: task.path={root!r} is not an .npz file; expected "
                              f"{EXPECTED}")
        layout, heads = _npz_layout(path), _files.npz_headers(path)
        shapes = {s: heads[x] for s, (x, _) in layout.items()}
        with np.load(path, allow_pickle=False) as z:
            labels = {s: np.asarray(z[y]) for s, (_, y) in layout.items()}
    for split, (shape, dtype) in shapes.items():
        _check_images(f"{root} ({split})", shape, dtype)
        _check_labels(f"{root} ({split})", labels[split], shape[0])
    if len({shape[1:] for shape, _ in shapes.values()}) > 1:
        raise ConfigError(f"task {NAME}: {root}: the splits' images differ in shape: "
                          f"{ {s: list(shape) for s, (shape, _) in shapes.items()} }")
    return shapes["train"][0][1:], labels


@functools.lru_cache(maxsize=1)
def _library_images(source: str, root: str, image_field: str,
                    label_field: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images [N, H, W(, C)], labels [N])} of a library source (read once)."""
    splits = _libraries.load(NAME, source, root, (image_field, label_field))
    return {s: (np.stack([np.asarray(im) for im in c[image_field]]),
                np.asarray(c[label_field])) for s, c in splits.items()}


def _source_images(source: str, root: str, stamp: tuple, image_field: str,
                   label_field: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images [N, H, W(, C)], labels [N])} as the source gives them."""
    kind, _ = _libraries.parse_source(NAME, source)
    if kind != "files":
        return _library_images(source, root, image_field, label_field)
    path = Path(root)
    with np.load(path, allow_pickle=False) as z:
        return {s: (z[x], z[y]) for s, (x, y) in _npz_layout(path).items()}


@functools.lru_cache(maxsize=2)
def _examples(source: str, root: str, stamp: tuple, image_field: str, label_field: str,
              valid_fraction: float, test_fraction: float) -> dict[str, tuple]:
    """{split: (pixels uint8 [N, H·W], labels int32 [N])} for train, eval and test."""
    given = _source_images(source, root, stamp, image_field, label_field)
    splits = {s: (to_gray(x).reshape(len(x), -1), y.astype(np.int32))
              for s, (x, y) in given.items()}
    missing = [s for s in ("eval", "test") if s not in splits]
    if missing:
        pixels, labels = splits["train"]
        u = _files.hash_fractions(row.tobytes() for row in pixels)
        for split, idx in _files.carve(u, missing, valid_fraction, test_fraction).items():
            splits[split] = (pixels[idx], labels[idx])
    where = root if source == "files" else f"{source} ({root or 'default cache'})"
    _files.check_sizes(NAME, {s: len(y) for s, (_, y) in splits.items()}, where)
    return splits


@dataclasses.dataclass(frozen=True)
class ImageClassification(EpochBatches, ClassificationTask):
    """Images as pixel sequences, one label each. Formats in the module docstring."""

    needs_data = True

    path: str = ""  # the .npz (source="files"); a library's cache folder
    source: str = "files"  # "files" | "tfds:<name>" | "hf:<name>" (see _libraries.py)
    num_classes: int = 0  # 0: max label + 1 over all splits
    image_field: str = "image"  # library sources: the image column (hf:cifar10: "img")
    label_field: str = "label"  # library sources: the label column
    valid_fraction: float = 0.1  # of train carved out as eval when no eval split is given
    test_fraction: float = 0.1  # of train carved out as test when no test split is given

    def __post_init__(self):
        problems = _files.check_fractions(NAME, self.valid_fraction, self.test_fraction)
        if self.num_classes < 0:
            problems.append(f"num_classes must be >= 0 (got {self.num_classes}; 0 = inferred)")
        if problems:
            raise ConfigError(f"{NAME}: " + "; ".join(problems))
        key = _libraries.source_key(NAME, self.source, self.path, EXPECTED)
        object.__setattr__(self, "_key", key)  # the file as it was when created
        shape, labels = _header(*self._source_args())
        object.__setattr__(self, "_image_shape", shape)  # [H, W] or [H, W, C]
        if not len(labels["train"]):
            raise ConfigError(f"task {NAME}: {self.path or self.source} has no train images")
        top = max(int(y.max()) for y in labels.values() if len(y))
        if self.num_classes == 0:
            object.__setattr__(self, "num_classes", top + 1)
        elif top >= self.num_classes:
            raise ConfigError(f"task {NAME}: {self.path or self.source} has label {top} >= "
                              f"num_classes={self.num_classes}")

    def _source_args(self) -> tuple:
        return (self.source, *self._key, self.image_field, self.label_field)

    def _examples(self) -> dict[str, tuple]:
        return _examples(*self._source_args(), self.valid_fraction, self.test_fraction)

    @property
    def vocab_size(self) -> int:
        return 256

    @classmethod
    def chance_accuracy(cls, settings):
        """1 / num_classes (a uniform guess) when the setting gives it or the source is
        CIFAR-10 (10); None when it is inferred from the labels."""
        s = with_defaults(cls, settings)
        if s["num_classes"] > 0:
            return 1.0 / s["num_classes"]
        return 0.1 if s["source"] in ("tfds:cifar10", "hf:cifar10") else None

    @property
    def max_length(self) -> int:
        return int(self._image_shape[0] * self._image_shape[1])

    def split_size(self, split: str) -> int:
        return len(self._examples()[split][1])

    def rows(self, split, ids, epochs, seed):
        pixels, labels = self._examples()[split]
        inputs = pixels[ids].astype(np.int32)  # [B, H·W]
        return {"inputs": inputs, "targets": labels[ids],
                "padding_mask": np.ones(inputs.shape, bool)}


TASK = ImageClassification
