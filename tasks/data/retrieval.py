"""Retrieval (LRA "Retrieval"): do two ACL Anthology Network papers cite each other? Two byte documents.

Reader of the released `new_aan_pairs.{train,eval,test}.tsv` at the top (streamed row by row: the train file is
several GB), tokenisation (LRA's byte rule, `tasks.data.tokenizers`), the learnable stand-in, and the datamodule last.
"""

from __future__ import annotations

import csv
import logging
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.data import download
from tasks.data.byte_text import ByteTextDataModule
from tasks.data.tokenizers import encode_bytes

log = logging.getLogger(__name__)

AAN_FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
AAN_COLUMNS = ("label", "id1", "id2", "text1", "text2")


def raise_field_size_limit() -> None:
    """AAN fields are whole papers, far above csv's default 131,072-character limit."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # C long is 32-bit on some platforms
            limit //= 2


def read_aan(path: Path) -> Iterator[tuple[str, str, int, str]]:
    """Stream (text1, text2, label, where) from a 5-column, header-less, unquoted tsv. Constant memory."""
    raise_field_size_limit()
    blank = empty = 0
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not row:
                blank += 1
                continue
            if len(row) != len(AAN_COLUMNS):
                raise ValueError(
                    f"{where}: {len(row)} tab-separated columns, expected {len(AAN_COLUMNS)} "
                    f"({', '.join(AAN_COLUMNS)}); an id-only file needs the tsv_data release with texts"
                )
            label = parse_label(row[0], where)
            if not row[3] or not row[4]:
                empty += 1
                continue
            yield row[3], row[4], label, where
    if blank or empty:
        log.warning("%s: skipped %d blank line(s) and %d pair(s) with an empty document", path, blank, empty)


def parse_label(field: str, where: str) -> int:
    """The released labels are written as floats ("1.0"); LRA parses float then casts to int."""
    try:
        value = float(field)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise ValueError(
            f"{where}: label {field!r} is not 0 or 1 (first column of label, id1, id2, text1, text2)"
        )
    return int(value)


# ----------------------------------------------------------------------------------------------------------------
# Learnable stand-in: pairs of generated "papers", linked (label 1) when they share a topic. NOT the benchmark.

SYLLABLES = [c + v for c in "bdfghjklmnprstvz" for v in "aeiou"]  # 80 syllables
SHARED = 'the we in of a model results "section" table paper show method data et al. é'.split()


def topic_vocabularies(n_topics: int, rng: random.Random, words_per_topic: int = 50) -> list[list[str]]:
    """Each topic's own words, built from its own block of syllables, so that topics differ in their letters."""
    if not 1 < n_topics <= len(SYLLABLES) // 3:  # 3 syllables make 117 words of 2-4 syllables, enough for 50
        raise ValueError(f"data.standin.num_topics={n_topics}: choose 2..{len(SYLLABLES) // 3}")
    topics = []
    for topic in range(n_topics):
        syllables = SYLLABLES[topic * len(SYLLABLES) // n_topics : (topic + 1) * len(SYLLABLES) // n_topics]
        words: set[str] = set()
        while len(words) < words_per_topic:
            words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
        topics.append(sorted(words))
    return topics


def standin_document(rng: random.Random, topic_words: list[str], max_bytes: int) -> str:
    """min(1000, max_bytes/2)..max_bytes bytes: 70 % topic words, 30 % shared filler, no tab or newline."""
    target = rng.randint(min(1000, max_bytes // 2), max_bytes)
    words: list[str] = []
    size = -1  # no space before the first word
    while True:
        word = rng.choice(topic_words) if rng.random() < 0.7 else rng.choice(SHARED)
        size += len(encode_bytes(word)) + 1
        if size > target:
            return " ".join(words)
        words.append(word)


def write_standin_aan(
    folder: Path, num_train: int, num_eval: int, seed: int, num_topics: int = 4, max_bytes: int = 6000
) -> Path:
    """Write `folder/new_aan_pairs.{train,eval,test}.tsv`: balanced pairs, labels as floats, `"` in the texts."""
    rng = random.Random(seed)
    topics = topic_vocabularies(num_topics, rng)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", num_train), ("val", num_eval), ("test", num_eval)):
        with open(folder / AAN_FILES[split], "w", encoding="utf-8", newline="") as handle:
            for i in range(n):
                label = i % 2
                topic1 = rng.randrange(num_topics)
                topic2 = topic1 if label else rng.choice([t for t in range(num_topics) if t != topic1])
                text1 = standin_document(rng, topics[topic1], max_bytes)
                text2 = standin_document(rng, topics[topic2], max_bytes)
                handle.write(
                    f"{float(label)}\tS{split[:2]}-{2 * i}\tS{split[:2]}-{2 * i + 1}\t{text1}\t{text2}\n"
                )
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Datamodule


class RetrievalDataModule(ByteTextDataModule):
    """AAN as LRA Retrieval: batches carry both documents (`input`/`mask`, `input2`/`mask2`) for the dual encoder.
    Validation is the released `eval` file. `synthetic=true` writes a learnable stand-in tsv set instead."""

    task = "retrieval"
    release_folders = ("tsv_data", "aan")  # the tarball's lra_release/lra_release/tsv_data, or s4's aan/
    split_files = AAN_FILES
    download_hint = (
        "Fix: `python -m tasks.download retrieval` (or data.download=true) takes tsv_data/ from lra_release.gz "
        "into <data_dir>/lra_release/. By hand: download https://storage.googleapis.com/long-range-arena/"
        "lra_release.gz (linked from the google-research/long-range-arena README) and unpack it into "
        "paths.data_dir: the files are lra_release/lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv"
    )
    standin_description = "generated paper pairs, linked when both documents share a generated topic"
    standin_defaults = {"num_train": 400, "num_eval": 100, "num_topics": 4, "max_bytes": 600, "seed": 0}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.dual_encoder:
            raise ValueError("data.dual_encoder must be true for Retrieval: every example has two documents")

    def download_into(self, root: Path) -> None:
        download.download_into(root, download.task_parts("retrieval"))

    def generate(self, folder: Path, synthetic: bool) -> None:
        write_standin_aan(folder, **self.standin)

    def train_texts(self, folder: Path) -> Iterator[str]:
        return (
            text for text1, text2, _, _ in read_aan(folder / AAN_FILES["train"]) for text in (text1, text2)
        )

    def read_split(self, folder: Path, split: str) -> Iterator[dict[str, Any]]:
        tokenizer = self.tokenizer(folder)
        for text1, text2, label, _ in read_aan(folder / AAN_FILES[split]):
            yield {"input": tokenizer(text1), "input2": tokenizer(text2), "label": label}
