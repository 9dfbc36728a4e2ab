"""Byte-level text classification from local files (LRA "Text": IMDb reviews as bytes).

Paper: Tay et al. 2020, "Long Range Arena" (arXiv:2011.04006), task "Text" — IMDb sentiment
(Maas et al. 2011, "Learning Word Vectors for Sentiment Analysis") read byte by byte, L = 4000.
Tests: compositional, long-range reading — the label depends on words spread over thousands of
byte tokens, with no tokenizer to shorten them.

Sources (`source`, `path`):
  folder   <path>/<label>/*.txt, or <path>/<split>/<label>/*.txt with split folders train/ and
           optionally test/, valid/ (or validation/, dev/) — the aclImdb layout, so
           --config.task.path=/data/aclImdb works as unpacked. Classes: `classes`, else the
           label folders present in every split folder (aclImdb: neg, pos; train/unsup/ is left
           out). Files are read as raw bytes.
  table    <path> is a .csv (header row) or .jsonl (one object per line) file, or a folder of
           {train,valid,test}.{csv,jsonl} (valid may be named validation / dev); the columns
           `text_field` and `label_field`. Checked line by line when the task is created.
  library  source="tfds:imdb_reviews" or "hf:imdb" (see _libraries.py; read offline from the
           library's cache; task.path, when given, is that cache folder).
Labels -> ids: their index in `classes` ("neg,pos"), else in the sorted label names of all
splits (numeric order when all are integers, so labels 0/1 keep their values).
Splits: the given train / eval (valid) / test; eval and test, when not given, are carved out of
train by a stable hash of each text (`valid_fraction`, `test_fraction`; see _files.py). A given
test split is the held-out test set (aclImdb's test/ is used as is; eval is carved from train/).
Tokens: the UTF-8 bytes of a text, id = byte + 1 (0 = pad; vocab 257), its first `seq_len`
bytes, padded with 0; padding_mask True on real bytes. Empty texts are skipped.
Batches: per-epoch permutations of train, fixed eval/test order (see _epochs.py).
Cost: tables and library sources are read when the task is created, folders at the first batch,
once per process (aclImdb's 50k files: a few seconds, ~65 MB held); a batch is O(B·L) numpy.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks import _files, _libraries
from attnjax.tasks._epochs import EpochBatches
from attnjax.tasks.base import ClassificationTask, with_defaults

NAME = "text_classification"
EXPECTED = ("a folder with one subfolder of .txt files per label, e.g. pos/ and neg/ (the IMDb "
            "layout, optionally under train/ and test/), or a .csv/.jsonl file (or a folder of "
            "train/valid/test .csv/.jsonl files) with text and label columns")
PAD, OFFSET = 0, 1  # token id = byte + OFFSET


class Texts(NamedTuple):
    """One split's examples, held as one byte array."""

    data: np.ndarray  # uint8 [total bytes]: the texts one after another
    starts: np.ndarray  # int64 [N]: where each text starts in data
    lengths: np.ndarray  # int64 [N]: its length in bytes (>= 1)
    labels: np.ndarray  # int32 [N]


def _pack(texts: list[bytes], labels: np.ndarray) -> Texts:
    lengths = np.array([len(t) for t in texts], np.int64)
    starts = np.cumsum(lengths) - lengths
    data = np.frombuffer(b"".join(texts), np.uint8)
    return Texts(data, starts, lengths, labels.astype(np.int32))


@functools.lru_cache(maxsize=4)
def _sources(source: str, root: str, stamp: tuple, text_field: str, label_field: str,
             classes: str) -> tuple[dict[str, tuple[list, np.ndarray]], tuple[str, ...]]:
    """({split: (texts as bytes, or .txt paths of a folder, [N]; label ids [N])}, class names)
    of the given splits; folders are only listed here (read in _examples)."""
    wanted = _files.parse_classes(classes)
    kind, _ = _libraries.parse_source(NAME, source)
    if kind != "files":
        splits = _libraries.load(NAME, source, root, (text_field, label_field))
        texts = {s: [t if isinstance(t, bytes) else str(t).encode() for t in c[text_field]]
                 for s, c in splits.items()}
        raw = {s: [x.item() if hasattr(x, "item") else x for x in c[label_field]]
               for s, c in splits.items()}
        ids, names = _files.label_ids(raw, lambda s, i: f"{source} {s} example {i}", wanted)
        return {s: (texts[s], ids[s]) for s in texts}, names
    path = Path(root)
    tables = ({"train": path} if path.is_file() else _files.find_tables(path))
    if path.is_file() and path.suffix.lower() not in _files.TABLE_SUFFIXES:
        raise ConfigError(f"task {NAME}: {path} is not a .csv or .jsonl file; expected {EXPECTED}")
    if tables:
        if "train" not in tables:
            raise ConfigError(f"task {NAME}: {path} has {sorted(tables)} tables but no "
                              f"train.csv / train.jsonl; expected {EXPECTED}")
        records = {s: _files.read_table(f, text_field, label_field) for s, f in tables.items()}
        raw = {s: [label for _, label, _ in r] for s, r in records.items()}
        where = lambda s, i: f"{tables[s]} line {records[s][i][2]}"
        ids, names = _files.label_ids(raw, where, wanted)
        return {s: ([t.encode() for t, _, _ in r], ids[s]) for s, r in records.items()}, names
    files, names = _files.text_folders(NAME, path, wanted, EXPECTED)
    out = {}
    for split, by_class in files.items():
        paths = [f for c in names for f in by_class[c]]
        labels = np.repeat(np.arange(len(names), dtype=np.int32),
                           [len(by_class[c]) for c in names])
        out[split] = (paths, labels)
    return out, names


@functools.lru_cache(maxsize=2)
def _examples(source: str, root: str, stamp: tuple, text_field: str, label_field: str,
              classes: str, valid_fraction: float, test_fraction: float) -> dict[str, Texts]:
    """{split: Texts} for train, eval and test (missing splits carved out of train)."""
    given, _ = _sources(source, root, stamp, text_field, label_field, classes)
    splits = {}
    for split, (texts, labels) in given.items():
        if texts and isinstance(texts[0], Path):
            texts = [f.read_bytes() for f in texts]
        keep = np.array([len(t) > 0 for t in texts], bool)  # empty texts are skipped
        splits[split] = ([t for t, k in zip(texts, keep, strict=True) if k], labels[keep])
    missing = [s for s in ("eval", "test") if s not in splits]
    if missing:
        texts, labels = splits["train"]
        parts = _files.carve(_files.hash_fractions(texts), missing, valid_fraction, test_fraction)
        for split, idx in parts.items():
            splits[split] = ([texts[i] for i in idx], labels[idx])
    where = root if source == "files" else f"{source} ({root or 'default cache'})"
    _files.check_sizes(NAME, {s: len(t) for s, (t, _) in splits.items()}, where)
    return {s: _pack(t, labels) for s, (t, labels) in splits.items()}


@dataclasses.dataclass(frozen=True)
class TextClassification(EpochBatches, ClassificationTask):
    """Byte-level classification of texts in local files. Formats in the module docstring."""

    needs_data = True
    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len

    path: str = ""  # folder or .csv/.jsonl file (source="files"); a library's cache folder
    source: str = "files"  # "files" | "tfds:<name>" | "hf:<name>" (see _libraries.py)
    seq_len: int = 1024  # L: bytes kept per text (LRA: 4000)
    text_field: str = "text"  # column / field of the text (tables, libraries)
    label_field: str = "label"  # column / field of the label (tables, libraries)
    classes: str = ""  # comma-separated class names in id order; "" = sorted names found
    valid_fraction: float = 0.1  # of train carved out as eval when no eval split is given
    test_fraction: float = 0.1  # of train carved out as test when no test split is given

    def __post_init__(self):
        problems = _files.check_fractions(NAME, self.valid_fraction, self.test_fraction)
        if self.seq_len < 1:
            problems.append(f"seq_len must be >= 1 (got {self.seq_len})")
        if problems:
            raise ConfigError(f"{NAME}: " + "; ".join(problems))
        key = _libraries.source_key(NAME, self.source, self.path, EXPECTED)
        object.__setattr__(self, "_key", key)  # the files as they were when created
        _sources(*self._source_args())  # checks the layout (reads tables and libraries)
        files = self.source == "files"
        if not files or not Path(key[0]).is_dir() or _files.find_tables(Path(key[0])):
            self._examples()  # already read: check the split sizes now

    def _source_args(self) -> tuple:
        return (self.source, *self._key, self.text_field, self.label_field, self.classes)

    def _examples(self) -> dict[str, Texts]:
        return _examples(*self._source_args(), self.valid_fraction, self.test_fraction)

    @property
    def class_names(self) -> tuple[str, ...]:
        return _sources(*self._source_args())[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def vocab_size(self) -> int:
        return 256 + OFFSET

    @classmethod
    def chance_accuracy(cls, settings):
        """1 / number of classes (a uniform guess) when `classes` names them or the source is
        IMDb (2); None when only the data tells (label folders, table columns)."""
        s = with_defaults(cls, settings)
        names = [c for c in str(s["classes"]).split(",") if c.strip()]
        if names:
            return 1.0 / len(names)
        return 0.5 if s["source"] in ("tfds:imdb_reviews", "hf:imdb") else None

    @property
    def max_length(self) -> int:
        return self.seq_len

    def split_size(self, split: str) -> int:
        return len(self._examples()[split].labels)

    def rows(self, split, ids, epochs, seed):
        t = self._examples()[split]
        length = np.minimum(t.lengths[ids], self.seq_len)[:, None]  # [b, 1] real bytes
        pos = np.arange(self.seq_len)  # [L]
        mask = pos < length  # [b, L]
        take = t.starts[ids][:, None] + np.minimum(pos, length - 1)  # [b, L], in bounds
        inputs = np.where(mask, t.data[take].astype(np.int32) + OFFSET, PAD).astype(np.int32)
        return {"inputs": inputs, "targets": t.labels[ids], "padding_mask": mask}


TASK = TextClassification
