"""Text (LRA "Text"): IMDB sentiment from UTF-8 bytes.

Readers of the released layouts at the top (aclImdb tree, Hugging Face parquet files), the learnable stand-in,
and the datamodule last; tokenisers are `tasks.data.tokenizers`. Formats and sources: docs/data.md#text.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.data import download
from tasks.data.base import hub_snapshots
from tasks.data.byte_text import ByteTextDataModule
from tasks.data.tokenizers import decode_bytes, encode_bytes

log = logging.getLogger(__name__)

IMDB_SPLITS = ("train", "test")
LABELS = {"neg": 0, "pos": 1}


# ----------------------------------------------------------------------------------------------------------------
# Readers: every reader yields (text, label, where), where names the file (and row) for error messages.


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
    """An IMDB copy on disk: `kind` is aclimdb (the Stanford tree) or parquet (HF `plain_text`), `path` its folder."""

    kind: str
    path: Path

    def read(self, split: str) -> Iterator[tuple[str, int, str]]:
        if self.kind == "aclimdb":
            return read_aclimdb(self.path, split)
        files = self.files(split)
        if not files:
            raise FileNotFoundError(f"no {self.path}/{split}-*.parquet for IMDB split '{split}'")
        return read_parquet(files)

    def files(self, split: str) -> list[Path]:
        if self.kind == "aclimdb":
            return sorted(p for label in LABELS for p in (self.path / split / label).glob("*.txt"))
        return sorted(self.path.glob(f"{split}-*.parquet"))

    def count(self, split: str) -> int:
        """Number of records (empty ones included) in a split, without reading the texts."""
        if self.kind == "aclimdb":
            return len(self.files(split))
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(split))


def imdb_source(folder: Path) -> ImdbSource | None:
    """The IMDB copy `folder` holds (an aclImdb tree or HF parquet files), or None."""
    if (folder / "train" / "pos").is_dir() or (folder / "train" / "neg").is_dir():
        return ImdbSource("aclimdb", folder)
    if any(folder.glob("train-*.parquet")):
        return ImdbSource("parquet", folder)
    return None


def write_imdb_parquet(folder: Path, cache_dir: str | None = None) -> None:
    """`datasets.load_dataset("stanfordnlp/imdb")` (its local cache, else the network) → `folder/{train,test}-*.parquet`."""
    import datasets

    folder.mkdir(parents=True)
    for split in IMDB_SPLITS:
        datasets.load_dataset("stanfordnlp/imdb", split=split, cache_dir=cache_dir).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet")
        )


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
    """Write an aclImdb tree `root/{train,test}/{neg,pos}/<id>_<rating>.txt`, balanced, ~150..max_bytes bytes each."""
    rng = random.Random(seed)
    for split, n in (("train", num_train), ("test", num_test)):
        for i in range(n):
            label = i % 2
            rating = rng.randint(7, 10) if label else rng.randint(1, 4)
            text = standin_review(rng, label, n_words=rng.randint(30, max(31, max_bytes // 7)))
            path = root / split / ("pos" if label else "neg") / f"{i}_{rating}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_bytes(text)[:max_bytes])
    return root


# ----------------------------------------------------------------------------------------------------------------
# Datamodule


class TextDataModule(ByteTextDataModule):
    """IMDB as LRA Text. Validation is a seeded held-out slice of train (`val_split` = its fraction) or, as LRA and
    s4 do, the test set (`val_split: test`). `synthetic=true` writes a learnable stand-in aclImdb tree instead.

    Found as the Stanford aclImdb tree or HF parquet files under the data folders, or in the HF hub cache
    (`hub_cache`); `download=true` fetches aclImdb_v1.tar.gz (`python -m tasks.download text`), `download=hf`
    writes parquet files from `datasets.load_dataset` (cache: `hf_cache_dir`)."""

    task = "text"
    release_folders = ("aclImdb", "imdb/aclImdb", "plain_text", "imdb/plain_text")
    download_hint = (
        "Fix: `python -m tasks.download text` (or data.download=true) fetches and unpacks aclImdb_v1.tar.gz "
        "(https://ai.stanford.edu/~amaas/data/sentiment/) into paths.data_dir; data.download=hf (or "
        "`python -m tasks.download text --source hf`) writes the HF parquet files plain_text/{train,test}-*.parquet "
        "from datasets.load_dataset('stanfordnlp/imdb') instead; or unpack or put either there by hand"
    )
    standin_description = "reviews of filler words carrying words of the label's sentiment (not IMDB)"
    standin_defaults = {"num_train": 400, "num_test": 100, "max_bytes": 600, "seed": 0}

    def __init__(
        self,
        val_split: float | str = 0.1,
        split_seed: int = 0,
        hf_cache_dir: str | None = None,
        hub_cache: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if val_split != "test" and not (isinstance(val_split, float) and 0 < val_split < 1):
            raise ValueError(f"data.val_split={val_split!r}: a fraction of train in (0, 1), or 'test' (LRA, s4)")
        self.val_split, self.split_seed = val_split, split_seed
        self.hf_cache_dir, self.hub_cache = hf_cache_dir, hub_cache

    # ---- where the reviews are

    def has_source(self, folder: Path) -> bool:
        return imdb_source(folder) is not None

    def check_folder(self, folder: Path) -> None:
        source = imdb_source(folder)
        if source is None:
            raise FileNotFoundError(
                f"{folder} holds no IMDB copy (expected aclImdb's train/{{neg,pos}}/ or train-*.parquet). "
                f"{self.download_hint}"
            )
        for split in IMDB_SPLITS:
            if source.kind == "parquet" and not source.files(split):
                raise FileNotFoundError(f"{folder} has no {split}-*.parquet (the IMDB {split} split)")
            for label in LABELS if source.kind == "aclimdb" else ():
                if not (folder / split / label).is_dir():
                    raise FileNotFoundError(
                        f"IMDB split folder {folder / split / label} is missing (expected aclImdb/{split}/{{neg,pos}}/)"
                    )

    def fallback_folders(self) -> list[Path]:
        return [snapshot / "plain_text" for snapshot in hub_snapshots(["stanfordnlp/imdb"], self.hub_cache)]

    def download_into(self, root: Path) -> None:
        source = "hf" if self.download == "hf" else "archive"
        download.download_into(root, download.task_parts("text", source, hf_cache_dir=self.hf_cache_dir))

    def source_files(self, folder: Path) -> list[Path]:
        source = imdb_source(folder)
        return [path for split in IMDB_SPLITS for path in source.files(split)]

    def generate(self, folder: Path, synthetic: bool) -> None:
        write_standin_imdb(folder, **self.standin)

    def token_options(self) -> dict[str, Any]:
        options = {**super().token_options(), "val_split": self.val_split}
        if self.val_split != "test":
            options["split_seed"] = self.split_seed
        return options

    # ---- splits

    def held_out(self, source: ImdbSource) -> set[int]:
        """Indices of the train records kept for validation: a seeded sample of `val_split` of them."""
        total = source.count("train")
        return set(random.Random(self.split_seed).sample(range(total), round(total * self.val_split)))

    def reviews(self, folder: Path, split: str) -> Iterator[tuple[str, int, str]]:
        source = imdb_source(folder)
        if split == "test" or (split == "val" and self.val_split == "test"):
            yield from source.read("test")
            return
        keep_for_val = self.held_out(source) if self.val_split != "test" else set()
        for index, review in enumerate(source.read("train")):
            if (index in keep_for_val) == (split == "val"):
                yield review

    def train_texts(self, folder: Path) -> Iterator[str]:
        return (text for text, _, _ in self.reviews(folder, "train"))

    def read_split(self, folder: Path, split: str) -> Iterator[dict[str, Any]]:
        tokenizer = self.tokenizer(folder)
        for text, label, _ in self.reviews(folder, split):
            yield {"input": tokenizer(text), "label": label}

    def on_setup(self) -> None:
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
