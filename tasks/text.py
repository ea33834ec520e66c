"""Text (LRA "Text"): IMDB sentiment from UTF-8 bytes.

Reader of the released layouts at the top (aclImdb tree, Hugging Face parquet, HF hub cache, `load_dataset`),
then the tokenisers (LRA's byte rule, s4's character vocabulary), the learnable stand-in, and the datamodule last.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMDB_SPLITS = ("train", "test")
LABELS = {"neg": 0, "pos": 1}


# ----------------------------------------------------------------------------------------------------------------
# Readers: every reader yields (text, label, where), where names the file (and row) for error messages.


def decode_bytes(raw: bytes) -> str:
    """Bytes to str without ever failing; `encode_bytes` gives the same bytes back (invalid UTF-8 included)."""
    return raw.decode("utf-8", errors="surrogateescape")


def encode_bytes(text: str) -> bytes:
    """The exact bytes of `text`: UTF-8, and undecodable input bytes restored as they were on disk."""
    return text.encode("utf-8", errors="surrogateescape")


def read_aclimdb(root: Path, split: str) -> Iterator[tuple[str, int, str]]:
    """Reviews of `aclImdb/<split>/{neg,pos}/<id>_<rating>.txt` in a fixed order; `unsup/` is not read."""
    empty: list[Path] = []
    for folder, label in LABELS.items():
        directory = root / split / folder
        if not directory.is_dir():
            raise FileNotFoundError(
                f"IMDB split folder {directory} is missing (expected aclImdb/{split}/{{neg,pos}}/)"
            )
        for path in sorted(directory.glob("*.txt")):
            raw = path.read_bytes()
            if not raw.strip():
                empty.append(path)
                continue
            yield decode_bytes(raw), label, str(path)
    report_skipped(empty, "empty review file")


def read_parquet(files: list[Path]) -> Iterator[tuple[str, int, str]]:
    """Rows of HF `stanfordnlp/imdb` parquet files (columns `text`, `label`), read in record batches."""
    import pyarrow.parquet as pq

    empty: list[str] = []
    for path in files:
        table = pq.ParquetFile(path)
        missing = {"text", "label"} - set(table.schema_arrow.names)
        if missing:
            raise ValueError(
                f"{path}: parquet file lacks column(s) {sorted(missing)}; expected `text` and `label`"
            )
        row = 0
        for batch in table.iter_batches(columns=["text", "label"], batch_size=1024):
            for text, label in zip(batch.column("text").to_pylist(), batch.column("label").to_pylist()):
                where = f"{path}, row {row}"
                row += 1
                yield from checked_review(text, label, where, empty)
    report_skipped(empty, "empty review")


def read_hf_datasets(split: str, cache_dir: str | None) -> Iterator[tuple[str, int, str]]:
    """`datasets.load_dataset("stanfordnlp/imdb")`: uses a local HF datasets cache, downloads if there is none."""
    import datasets

    dataset = datasets.load_dataset("stanfordnlp/imdb", split=split, cache_dir=cache_dir)
    empty: list[str] = []
    for row, example in enumerate(dataset):
        yield from checked_review(
            example["text"], example["label"], f"load_dataset('stanfordnlp/imdb')[{split}][{row}]", empty
        )
    report_skipped(empty, "empty review")


def checked_review(
    text: str | None, label: int, where: str, empty: list[str]
) -> Iterator[tuple[str, int, str]]:
    if label not in (0, 1):
        raise ValueError(
            f"{where}: label {label!r} is not 0 (neg) or 1 (pos); the `unsupervised` split has no labels"
        )
    if not text or not text.strip():
        empty.append(where)
        return
    yield text, label, where


def report_skipped(items: list, what: str) -> None:
    if items:
        log.warning("skipped %d %s(s), e.g. %s", len(items), what, items[0])


@dataclass(frozen=True)
class ImdbSource:
    """Where IMDB was found: `kind` is aclimdb | parquet | hf, `path` the folder (None for hf)."""

    kind: str
    path: Path | None = None

    def read(self, split: str, hf_cache_dir: str | None = None) -> Iterator[tuple[str, int, str]]:
        if self.kind == "aclimdb":
            return read_aclimdb(self.path, split)
        if self.kind == "parquet":
            files = sorted(self.path.glob(f"{split}-*.parquet"))
            if not files:
                raise FileNotFoundError(f"no {self.path}/{split}-*.parquet for IMDB split '{split}'")
            return read_parquet(files)
        return read_hf_datasets(split, hf_cache_dir)


def imdb_candidates(data_dir: Path, hub_cache: Path | None = None) -> list[tuple[str, Path]]:
    """The places IMDB may be, in the order they are tried; `hub_cache` defaults to the HF hub cache."""
    places = [("aclimdb", data_dir / "aclImdb"), ("aclimdb", data_dir / "imdb" / "aclImdb")]
    places += [("parquet", data_dir / "plain_text"), ("parquet", data_dir / "imdb" / "plain_text")]
    if hub_cache is None:
        from huggingface_hub.constants import HF_HUB_CACHE

        hub_cache = Path(HF_HUB_CACHE)
    snapshots = Path(hub_cache) / "datasets--stanfordnlp--imdb" / "snapshots"
    places += [("parquet", p / "plain_text") for p in sorted(snapshots.glob("*"))] or [
        ("parquet", snapshots / "<revision>" / "plain_text")
    ]
    return places


def find_imdb(data_dir: Path, download: bool, hub_cache: Path | None = None) -> ImdbSource:
    """The first layout present under `data_dir` (or the HF hub cache); `load_dataset` only when `download`."""
    places = imdb_candidates(Path(data_dir), hub_cache)
    for kind, path in places:
        if kind == "aclimdb" and (path / "train").is_dir():
            return ImdbSource(kind, path)
        if kind == "parquet" and any(path.glob("train-*.parquet")):
            return ImdbSource(kind, path)
    if download:
        return ImdbSource("hf")
    tried = "\n  ".join(str(p) for _, p in places)
    raise FileNotFoundError(
        "IMDB not found. Looked for:\n  " + tried + "\nFix: unpack aclImdb_v1.tar.gz "
        "(https://ai.stanford.edu/~amaas/data/sentiment/) into data.data_dir, or put the HF parquet files "
        "plain_text/{train,test}-*.parquet there, or set data.download=true to use datasets.load_dataset"
        "('stanfordnlp/imdb') (its cache or the network), or data.synthetic=true for the stand-in."
    )


# ----------------------------------------------------------------------------------------------------------------
# Tokenisers. Both return int16 ids with 0 = padding, never longer than max_length.

BYTE_VOCAB_SIZE = 257  # LRA ByteTextEncoder: 256 byte values + pad


class ByteTokenizer:
    """LRA's rule: id = UTF-8 byte + 1, pad 0, vocab 257, truncated to `max_length` (no BOS/EOS)."""

    vocab_size = BYTE_VOCAB_SIZE

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, text: str) -> np.ndarray:
        raw = encode_bytes(text)[: self.max_length]
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int16) + 1


CHAR_SPECIALS = ("<pad>", "<unk>", "<eos>")  # s4's specials, <pad> first so that pad id is 0


class CharTokenizer:
    """s4's character vocabulary: Unicode characters seen `min_freq` times in train, rarer ones -> <unk>, <eos> appended."""

    def __init__(self, chars: list[str], max_length: int):
        self.itos = list(CHAR_SPECIALS) + chars
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.unk, self.eos = self.stoi["<unk>"], self.stoi["<eos>"]
        self.max_length = max_length
        self.vocab_size = len(self.itos)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int, max_length: int) -> CharTokenizer:
        counts = Counter()
        for text in texts:
            counts.update(text)
        kept = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
        return cls(kept, max_length)

    def __call__(self, text: str) -> np.ndarray:
        ids = [self.stoi.get(c, self.unk) for c in text[: self.max_length - 1]] + [self.eos]
        return np.asarray(ids, dtype=np.int16)


# ----------------------------------------------------------------------------------------------------------------
# Learnable stand-in: a fake aclImdb tree whose reviews carry sentiment words. NOT the benchmark.

FILLER = (
    "the film movie plot actor actress scene story director camera script music ending character was is it "
    "this that and but with of a an in on at to for by from as very quite rather some really just then also "
    "café naïve über déjà-vu fiancée — «quote» 映画 “dialogue”"
).split()
POSITIVE = "great superb loved wonderful brilliant masterpiece delightful moving".split()
NEGATIVE = "awful boring hated terrible dreadful waste tedious clumsy".split()


def standin_review(rng: random.Random, label: int, n_words: int) -> str:
    """Filler words with about one sentiment word of the label's lexicon in eight, and `<br />` breaks."""
    lexicon = POSITIVE if label else NEGATIVE
    words = [rng.choice(lexicon) if rng.random() < 0.125 else rng.choice(FILLER) for _ in range(n_words)]
    for i in range(12, n_words, rng.randint(12, 40)):
        words[i] += ". <br /><br />"
    return " ".join(words)


def write_standin_imdb(root: Path, n_train: int, n_test: int, seed: int, max_bytes: int = 6000) -> Path:
    """Write `root/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`, balanced, 200..max_bytes bytes each."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            label = i % 2
            rating = rng.randint(7, 10) if label else rng.randint(1, 4)
            text = standin_review(rng, label, n_words=rng.randint(30, max(31, max_bytes // 7)))
            path = root / "aclImdb" / split / ("pos" if label else "neg") / f"{i}_{rating}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_bytes(text)[:max_bytes])
    return root / "aclImdb"
