"""Retrieval (LRA "Retrieval"): do two ACL Anthology Network papers cite each other? Two byte documents.

Reader of the released `new_aan_pairs.{train,eval,test}.tsv` at the top (streamed row by row: the train file is
several GB), tokenisation (LRA's byte rule from `tasks.text`), the learnable stand-in, and the datamodule last.
"""

from __future__ import annotations

import csv
import logging
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.text import encode_bytes

log = logging.getLogger(__name__)

AAN_SPLITS = {"train": "train", "val": "eval", "test": "test"}  # our split name -> the released file's
AAN_COLUMNS = ("label", "id1", "id2", "text1", "text2")


def aan_file(split: str) -> str:
    return f"new_aan_pairs.{AAN_SPLITS[split]}.tsv"


def aan_candidates(data_dir: Path) -> list[Path]:
    """Folders that may hold the tsv files: the tarball's doubled `lra_release/lra_release/`, single, s4's `aan/`."""
    data_dir = Path(data_dir)
    return [
        data_dir / "lra_release" / "lra_release" / "tsv_data",
        data_dir / "lra_release" / "tsv_data",
        data_dir / "tsv_data",
        data_dir / "aan",
    ]


def find_aan(data_dir: Path) -> Path:
    """The first candidate folder holding the train file; every split must then be there."""
    places = aan_candidates(data_dir)
    for folder in places:
        if (folder / aan_file("train")).is_file():
            for split in AAN_SPLITS:
                if not (folder / aan_file(split)).is_file():
                    raise FileNotFoundError(
                        f"AAN split '{split}' missing: {folder / aan_file(split)} (found {aan_file('train')} beside it)"
                    )
            return folder
    tried = "\n  ".join(str(p / aan_file("train")) for p in places)
    raise FileNotFoundError(
        "AAN (LRA Retrieval) not found. Looked for:\n  " + tried + "\nFix: download lra_release.gz "
        "(https://storage.googleapis.com/long-range-arena/lra_release.gz, see the LRA README) and unpack it into "
        "data.data_dir (the doubled lra_release/lra_release/tsv_data/ is fine), or set data.synthetic=true for the stand-in."
    )


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


def byte_pair(text1: str, text2: str, tokenizer) -> dict:
    return {"input": tokenizer(text1), "input2": tokenizer(text2)}


# ----------------------------------------------------------------------------------------------------------------
# Learnable stand-in: pairs of generated "papers", linked (label 1) when they share a topic. NOT the benchmark.

SYLLABLES = "ka lo mi ne pu ra si to vu ze ba de fi go hu ja".split()
SHARED = 'the we in of a model results "section" table paper show method data et al. é'.split()


def topic_vocabularies(n_topics: int, rng: random.Random, words_per_topic: int = 50) -> list[list[str]]:
    """Each topic's own words, built from syllables (distinct across topics)."""
    seen: set[str] = set()
    topics = []
    for _ in range(n_topics):
        words: list[str] = []
        while len(words) < words_per_topic:
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        topics.append(words)
    return topics


def standin_document(rng: random.Random, topic_words: list[str], max_bytes: int) -> str:
    """About 1-6 KB (up to max_bytes): 70 % topic words, 30 % shared filler, no tab or newline."""
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
    folder: Path, sizes: dict[str, int], seed: int, n_topics: int = 4, max_bytes: int = 6000
) -> Path:
    """Write `folder/new_aan_pairs.{train,eval,test}.tsv`: balanced pairs, labels as floats, `"` in the texts."""
    rng = random.Random(seed)
    topics = topic_vocabularies(n_topics, rng)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        with open(folder / aan_file(split), "w", encoding="utf-8", newline="") as handle:
            for i in range(n):
                label = i % 2
                topic1 = rng.randrange(n_topics)
                topic2 = topic1 if label else rng.choice([t for t in range(n_topics) if t != topic1])
                text1 = standin_document(rng, topics[topic1], max_bytes)
                text2 = standin_document(rng, topics[topic2], max_bytes)
                handle.write(
                    f"{float(label)}\tS{split[:2]}-{2 * i}\tS{split[:2]}-{2 * i + 1}\t{text1}\t{text2}\n"
                )
    return folder
