"""Tiny data files for the tasks that read local data (`needs_data`), so the generic task tests
(tests/test_tasks.py) and tests/test_data_tasks.py can run them without any download.

    settings_for(name, root) -> task settings (path etc.), after writing its files under root

Files are written once per root (a second call reuses them) and are deterministic. Fast: a few
ms in all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ["the", "film", "was", "a", "great", "dull", "plot", "actor", "scene", "story", "bad",
         "good", "fine", "music", "long", "short", "and", "but", "not", "very", "naïve", "café",
         "déjà", "vu"]


def words(rng: np.random.Generator, n: int) -> str:
    """n random words from WORDS (some with multi-byte UTF-8 characters)."""
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def write_text_folders(root: Path, counts: dict[str, int], seed: int = 0) -> dict[Path, str]:
    """<root>/<split>/<label>/<i>.txt for counts {"train/pos": 16, ...}; returns {file: text}.
    Texts are distinct, 3..40 words long (so some exceed a 64-byte seq_len)."""
    rng, out = np.random.default_rng(seed), {}
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            text = f"{folder} {i}: {words(rng, int(rng.integers(3, 41)))}"
            path = root / folder / f"{i:03d}.txt"
            path.write_text(text, encoding="utf-8")
            out[path] = text
    return out


def write_bytes(path: Path, size: int, seed: int = 0) -> bytes:
    """A text file of exactly `size` bytes of random words; returns its bytes."""
    rng = np.random.default_rng(seed)
    data = b""
    while len(data) < size:
        data += (words(rng, 200) + "\n").encode()
    data = data[:size]
    path.write_bytes(data)
    return data


def write_images(path: Path, splits: dict[str, int], shape=(8, 8), num_classes: int = 4,
                 seed: int = 0, layout: str = "xy") -> dict[str, np.ndarray]:
    """An .npz of random uint8 images [N, *shape] and labels < num_classes; layout "xy" gives
    x_<split>, y_<split> keys for splits {"train": 48, "test": 16, ...}, "pool" gives images,
    labels (of splits["train"] images). Returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in splits.items():
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, num_classes, n).astype(np.int64)
    if layout == "pool":
        arrays = {"images": arrays["x_train"], "labels": arrays["y_train"]}
    np.savez(path, **arrays)
    return arrays


def settings_for(name: str, root: Path) -> dict:
    """Writes `name`'s fixture files under root (once) and returns the task's settings."""
    root = Path(root) / name
    done = root / ".done"
    if name == "text_classification":
        if not done.exists():
            write_text_folders(root, {"train/pos": 16, "train/neg": 16, "test/pos": 4,
                                      "test/neg": 4})
        settings = {"path": str(root), "seq_len": 64, "valid_fraction": 0.25}
    elif name == "bytes_lm":
        if not done.exists():
            root.mkdir(parents=True, exist_ok=True)
            write_bytes(root / "text.txt", 24_000)
        settings = {"path": str(root / "text.txt"), "seq_len": 32}
    elif name == "image_classification":
        if not done.exists():
            root.mkdir(parents=True, exist_ok=True)
            write_images(root / "images.npz", {"train": 48, "test": 16})
        settings = {"path": str(root / "images.npz"), "valid_fraction": 0.25}
    else:
        raise KeyError(f"tests/data_fixtures.py has no fixture for task {name!r}; add one")
    done.touch()
    return settings


def lra_data(root: Path) -> Path:
    """A folder as experiments/lra.py reads it ($ATTNJAX_LRA_DATA): aclImdb/ and cifar10.npz
    (32 x 32 x 3 images, 10 classes), tiny."""
    root = Path(root) / "lra_data"
    if not (root / "cifar10.npz").exists():
        write_text_folders(root / "aclImdb", {"train/pos": 16, "train/neg": 16, "test/pos": 4,
                                              "test/neg": 4})
        write_images(root / "cifar10.npz", {"train": 48, "test": 16}, shape=(32, 32, 3),
                     num_classes=10)
    return root
