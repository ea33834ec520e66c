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
from typing import Any

import datasets
import numpy as np

from tasks.data import CACHE_VERSION, SequenceDataModule

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

    def files(self, split: str) -> list[Path]:
        if self.kind == "aclimdb":
            return sorted(p for label in LABELS for p in (self.path / split / label).glob("*.txt"))
        return sorted(self.path.glob(f"{split}-*.parquet"))

    def count(self, split: str, hf_cache_dir: str | None = None) -> int:
        """Number of records (empty ones included) in a split, without reading the texts."""
        if self.kind == "aclimdb":
            return len(self.files(split))
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(split))
        import datasets

        return len(datasets.load_dataset("stanfordnlp/imdb", split=split, cache_dir=hf_cache_dir))

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the raw data for the cache key: folder, and per split the file count, bytes, newest mtime."""
        if self.kind == "hf":
            return {"hf": "stanfordnlp/imdb"}
        splits = {}
        for split in IMDB_SPLITS:
            stats = [f.stat() for f in self.files(split)]
            splits[split] = [
                len(stats),
                sum(s.st_size for s in stats),
                max((s.st_mtime_ns for s in stats), default=0),
            ]
        return {self.kind: str(self.path.resolve()), **splits}


def imdb_candidates(data_dir: Path, hub_cache: Path | None = None) -> list[tuple[str, Path]]:
    """The places IMDB may be, in the order they are tried; `hub_cache` defaults to the HF hub cache."""
    places = [
        ("aclimdb", data_dir / "aclImdb"),
        ("aclimdb", data_dir / "imdb" / "aclImdb"),
        ("aclimdb", data_dir),
    ]
    places += [("parquet", data_dir / "plain_text"), ("parquet", data_dir / "imdb" / "plain_text")]
    places += [("parquet", data_dir)]
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
        if kind == "aclimdb" and (path / "train" / "pos").is_dir():
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
# Tokenisers. Both return int16 ids with 0 = padding.

BYTE_VOCAB_SIZE = 257  # LRA ByteTextEncoder: 256 byte values + pad


class ByteTokenizer:
    """LRA's rule: id = UTF-8 byte + 1, pad 0, vocab 257, no BOS/EOS (the datamodule truncates to max_length)."""

    vocab_size = BYTE_VOCAB_SIZE

    def __call__(self, text: str) -> np.ndarray:
        return np.frombuffer(encode_bytes(text), dtype=np.uint8).astype(np.int16) + 1


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


def write_standin_imdb(root: Path, num_train: int, num_test: int, seed: int, max_bytes: int = 6000) -> Path:
    """Write `root/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`, balanced, about 150..max_bytes bytes each."""
    rng = random.Random(seed)
    for split, n in (("train", num_train), ("test", num_test)):
        for i in range(n):
            label = i % 2
            rating = rng.randint(7, 10) if label else rng.randint(1, 4)
            text = standin_review(rng, label, n_words=rng.randint(30, max(31, max_bytes // 7)))
            path = root / "aclImdb" / split / ("pos" if label else "neg") / f"{i}_{rating}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_bytes(text)[:max_bytes])
    return root / "aclImdb"


# ----------------------------------------------------------------------------------------------------------------
# Shared with Retrieval: the tokeniser named by `data.tokenizer`, the stand-in options, the int16 cache.

STANDIN_WARNING = "data.synthetic=true: %s runs on a generated STAND-IN (%s), NOT the LRA benchmark; accuracies are not comparable"


class ByteTextDataModule(SequenceDataModule):
    """Base of Text and Retrieval: `tokenizer` is `byte` (LRA) or `char` (s4's vocabulary, built from the train
    texts), tokens are cached as int16, and `standin` holds the stand-in generator's options."""

    standin_defaults: dict[str, Any] = {}

    def __init__(
        self,
        tokenizer: str = "byte",
        char_min_freq: int = 15,
        standin: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if tokenizer not in ("byte", "char"):
            raise ValueError(
                f"data.tokenizer={tokenizer!r}: choose 'byte' (LRA) or 'char' (s4's character vocabulary)"
            )
        if tokenizer == "byte" and self.vocab_size != BYTE_VOCAB_SIZE:
            raise ValueError(
                f"data.vocab_size={self.vocab_size} but byte tokens need {BYTE_VOCAB_SIZE} (bytes + pad)"
            )
        unknown = set(standin or {}) - set(self.standin_defaults)
        if unknown:
            raise ValueError(
                f"data.standin has unknown options {sorted(unknown)}; known: {sorted(self.standin_defaults)}"
            )
        self.tokenizer_kind, self.char_min_freq = tokenizer, char_min_freq
        self.standin = {**self.standin_defaults, **dict(standin or {})}
        self._tokenizer: ByteTokenizer | CharTokenizer | None = None

    def train_texts(self, folder: Path) -> Iterator[str]:
        """Every text of the train split (the character vocabulary is built from them)."""
        raise NotImplementedError

    def tokenizer(self, folder: Path) -> ByteTokenizer | CharTokenizer:
        if self._tokenizer is None and self.tokenizer_kind == "byte":
            self._tokenizer = ByteTokenizer()
        elif self._tokenizer is None:
            self._tokenizer = CharTokenizer.build(
                self.train_texts(folder), self.char_min_freq, self.max_length
            )
            if self._tokenizer.vocab_size > self.vocab_size:
                raise ValueError(
                    f"the character vocabulary (char_min_freq={self.char_min_freq}) has {self._tokenizer.vocab_size} "
                    f"entries but data.vocab_size={self.vocab_size}: raise data.vocab_size or data.char_min_freq"
                )
            log.info("character vocabulary, %d entries: %s", self._tokenizer.vocab_size, self._tokenizer.itos)
        return self._tokenizer

    def synthetic_options(self) -> dict[str, Any]:
        return self.standin

    def token_options(self) -> dict[str, Any]:
        options = {"max_length": self.max_length, "tokenizer": self.tokenizer_kind}
        if self.tokenizer_kind == "char":
            options["char_min_freq"] = self.char_min_freq
        return options

    def features(self) -> datasets.Features:
        columns = super().features()
        for name in ("input", "input2"):
            if name in columns:
                columns[name] = datasets.Sequence(
                    datasets.Value("int16")
                )  # ids < 32768; half of int32 on disk
        return columns


# ----------------------------------------------------------------------------------------------------------------
# Datamodule


class TextDataModule(ByteTextDataModule):
    """IMDB as LRA Text. Validation is a seeded held-out slice of train (`val_split` = its fraction) or, as LRA and
    s4 do, the test set (`val_split: test`). `synthetic=true` writes a learnable stand-in aclImdb tree instead."""

    task = "text"
    standin_defaults = {"num_train": 400, "num_test": 100, "max_bytes": 600, "seed": 0}

    def __init__(
        self,
        val_split: float | str = 0.1,
        split_seed: int = 0,
        download: bool = False,
        hf_cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if val_split != "test" and not (isinstance(val_split, float) and 0 < val_split < 1):
            raise ValueError(
                f"data.val_split={val_split!r}: a fraction of train in (0, 1), or 'test' (LRA, s4)"
            )
        self.val_split, self.split_seed = val_split, split_seed
        self.download, self.hf_cache_dir = download, hf_cache_dir
        self.source: ImdbSource | None = None

    # where the reviews are
    def generate(self, folder: Path, synthetic: bool) -> None:
        write_standin_imdb(folder, **self.standin)

    def raw_folder(self) -> Path:
        if self.synthetic:
            log.warning(STANDIN_WARNING, "Text", "sentiment words in filler text")
            self.source = ImdbSource("aclimdb", super().raw_folder() / "aclImdb")
        else:
            self.source = find_imdb(self.data_dir or self.root_dir, self.download)
        return self.source.path or Path("stanfordnlp/imdb")

    def cache_key(self, folder: Path) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "task": self.task,
            "source": self.source.fingerprint(),
            **self.token_options(),
        }

    def token_options(self) -> dict[str, Any]:
        options = {**super().token_options(), "val_split": self.val_split}
        if self.val_split != "test":
            options["split_seed"] = self.split_seed
        return options

    # splits
    def held_out(self) -> set[int]:
        """Indices of the train records kept for validation: a seeded sample of `val_split` of them."""
        total = self.source.count("train", self.hf_cache_dir)
        return set(random.Random(self.split_seed).sample(range(total), round(total * self.val_split)))

    def reviews(self, split: str) -> Iterator[tuple[str, int, str]]:
        if split == "test" or (split == "val" and self.val_split == "test"):
            yield from self.source.read("test", self.hf_cache_dir)
            return
        keep_for_val = self.held_out() if self.val_split != "test" else set()
        for index, review in enumerate(self.source.read("train", self.hf_cache_dir)):
            if (index in keep_for_val) == (split == "val"):
                yield review

    def train_texts(self, folder: Path) -> Iterator[str]:
        return (text for text, _, _ in self.reviews("train"))

    def read_split(self, folder: Path, split: str) -> Iterator[dict[str, Any]]:
        tokenizer = self.tokenizer(folder)
        for text, label, _ in self.reviews(split):
            yield {"input": tokenizer(text), "label": label}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.val_split == "test":
            log.warning(
                "Text validation = the IMDB test set (data.val_split=test, the LRA/s4 protocol): "
                "checkpoint selection sees the test set"
            )
        else:
            log.info(
                "Text validation: %d reviews held out of IMDB train (data.val_split=%s, data.split_seed=%d); "
                "test: IMDB test",
                len(self.splits["val"]),
                self.val_split,
                self.split_seed,
            )
