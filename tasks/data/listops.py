"""ListOps (LRA): reader of the released `basic_{train,val,test}.tsv`, LRA tokenisation, and our generator.

Released format: tab-separated `Source`/`Target` with a header, CRLF line ends, e.g.
`( ( ( ( [MAX 1 ) 7 ) 2 ) ] )<TAB>7`. Tokenisation as LRA: parentheses dropped, `]` kept as its own symbol,
whitespace split. Ids are fixed: 0 pad, digits 1–10, operators 11–14, `]` 15 (vocab_size 16).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import multiprocessing
import os
import random
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.data import download
from tasks.data.base import SequenceDataModule, options_hash

log = logging.getLogger(__name__)

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VOCAB = {token: i + 1 for i, token in enumerate([*"0123456789", *OPERATORS, "]"])}  # 0 is padding
LRA_GENERATOR = {
    "num_train": 96000,
    "num_val": 2000,
    "num_test": 2000,
    "max_depth": 10,
    "max_args": 10,
    "min_length": 500,
    "max_length": 2000,
    "seed": 0,
}
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
LEAF_PROBABILITY = 0.75  # LRA: VALUE_P = 0.25 is the chance of drawing an operator
SHARDS = 64  # independent generator streams (fixed, so the data do not depend on the process count)


def apply(operator: str, args: list[int]) -> int:
    """The value of one operator node (MED as LRA: int(np.median), averaging the middle two, truncated)."""
    if operator == "[MIN":
        return min(args)
    if operator == "[MAX":
        return max(args)
    if operator == "[MED":
        return int(statistics.median(args))
    return sum(args) % 10  # [SM


def tokenize(source: str) -> list[str]:
    """LRA's rewrite: drop parentheses, split on whitespace (`]` stays a token)."""
    return source.replace("(", " ").replace(")", " ").split()


def evaluate(tokens: list[str]) -> int:
    """Value of a tokenised expression (prefix operators closed by `]`); raises ValueError if malformed."""
    stack: list[list[Any]] = [[None]]  # frames of [operator, args...]; the outer frame holds the result
    for token in tokens:
        if token in OPERATORS:
            stack.append([token])
        elif token == "]":
            if len(stack) < 2 or len(stack[-1]) < 2:
                raise ValueError("']' without an open operator and arguments")
            operator, *args = stack.pop()
            stack[-1].append(apply(operator, args))
        elif token.isdigit() and len(token) == 1:
            stack[-1].append(int(token))
        else:
            raise ValueError(f"unknown token {token!r}")
    if len(stack) != 1 or len(stack[0]) != 2:
        raise ValueError("unbalanced expression")
    return stack[0][1]


class _TooLong(Exception):
    pass


def sample_tree(rng: random.Random, max_depth: int, max_args: int, budget: int) -> tuple[str, int, int]:
    """One tree of LRA's sampler → (LRA serialisation, value, token count). Stops early (raising _TooLong) once
    the count reaches `budget`: such trees are rejected anyway, so the accepted trees' distribution is unchanged."""
    count = 0

    def grow(depth: int) -> tuple[str, int]:
        nonlocal count
        if depth >= max_depth or rng.random() < LEAF_PROBABILITY:
            count += 1
            if count >= budget:
                raise _TooLong
            digit = rng.randrange(10)
            return str(digit), digit
        num_args = rng.randint(2, max_args)
        children = [grow(depth + 1) for _ in range(num_args)]
        operator = rng.choice(OPERATORS)
        count += 2  # the operator and its closing ]
        if count >= budget:
            raise _TooLong
        # LRA nests pairs left to right: ( ( ( OP c1 ) c2 ) ... ck ) then ( that ] )
        text = f"( {operator} {children[0][0]} )"
        for child, _ in children[1:]:
            text = f"( {text} {child} )"
        return f"( {text} ] )", apply(operator, [value for _, value in children])

    text, value = grow(1)
    return text, value, count


def accepted_trees(options: dict[str, Any], shard: int, quota: int) -> list[tuple[str, int]]:
    """`quota` trees with min_length < tokens < max_length from shard `shard`'s own seeded stream."""
    rng = random.Random(f"{options['seed']}/{shard}")  # str seeds are hashed with sha512: stable across runs
    rows: list[tuple[str, int]] = []
    while len(rows) < quota:
        try:
            text, value, count = sample_tree(
                rng, options["max_depth"], options["max_args"], options["max_length"]
            )
        except _TooLong:
            continue
        if count > options["min_length"]:
            rows.append((text, value))
    return rows


def generate_listops(
    options: dict[str, Any], processes: int | None = None
) -> dict[str, list[tuple[str, int]]]:
    """LRA's ListOps generator, seeded: distinct trees with min_length < tokens < max_length, split in order.

    Trees come from SHARDS independent seeded streams, merged in shard order, so the data set depends only on the
    options, not on how many processes (`processes`, default: the CPU count for large sets) drew them."""
    wanted = options["num_train"] + options["num_val"] + options["num_test"]
    if processes is None:
        processes = min(os.cpu_count() or 1, SHARDS) if wanted >= 5000 else 1
    examples: dict[str, int] = {}  # insertion-ordered, duplicates dropped as LRA's set does
    first_shard = 0
    # fork (where available): workers need only this module's pure-Python sampler, not fresh heavy imports
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    with context.Pool(processes) if processes > 1 else contextlib.nullcontext() as pool:
        while len(examples) < wanted:
            quota = -(-(wanted - len(examples)) // SHARDS)
            jobs = [(options, shard, quota) for shard in range(first_shard, first_shard + SHARDS)]
            for rows in pool.imap(_accepted_trees_job, jobs) if pool else map(_accepted_trees_job, jobs):
                for text, value in rows:
                    if len(examples) < wanted:
                        examples.setdefault(text, value)
                log.info("ListOps generator: %d / %d examples", len(examples), wanted)
            first_shard += SHARDS
    items = list(examples.items())
    first, second = options["num_train"], options["num_train"] + options["num_val"]
    return {"train": items[:first], "val": items[first:second], "test": items[second:]}


def _accepted_trees_job(job: tuple[dict[str, Any], int, int]) -> list[tuple[str, int]]:
    return accepted_trees(*job)


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
    """The release's format: csv.writer with tabs, header `Source Target`, CRLF line ends."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows(rows)


def read_tsv(path: Path) -> Iterator[tuple[list[int], int]]:
    """Token ids and label of every row; header optional, CRLF or LF; errors name the file and line."""
    with path.open(newline="") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            columns = line.split("\t")
            if line_number == 1 and [c.strip().lower() for c in columns] == ["source", "target"]:
                continue
            where = f"{path}:{line_number}"
            if len(columns) != 2:
                raise ValueError(
                    f"{where}: expected 2 tab-separated columns (Source, Target), found {len(columns)}"
                )
            source, target = columns
            try:
                label = int(target)
            except ValueError:
                raise ValueError(f"{where}: Target {target!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise ValueError(f"{where}: Target {label} is outside 0..9")
            ids = []
            for token in tokenize(source):
                if token not in VOCAB:
                    raise ValueError(
                        f"{where}: unknown token {token!r} (ListOps has digits, {', '.join(OPERATORS)}, ])"
                    )
                ids.append(VOCAB[token])
            yield ids, label


class ListOpsDataModule(SequenceDataModule):
    """ListOps from the release (or our generator when absent). `generator` holds the generator options
    (defaults: LRA's); `synthetic=true` generates a tiny set instead (tests, smoke runs)."""

    task = "listops"
    release_folders = ("listops-1000", "listops")
    split_files = SPLIT_FILES
    can_generate = True
    download_hint = (
        "Get the release with `python -m tasks.download listops` (or data.download=true): it takes "
        "listops-1000/ from lra_release.gz (google-research/long-range-arena) into <data_dir>/lra_release/"
    )
    standin_description = "a tiny set of our generator's expressions (depth <= 5, 10-64 tokens)"

    def __init__(self, generator: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generator = {**LRA_GENERATOR, **dict(generator or {})}
        unknown = set(self.generator) - set(LRA_GENERATOR)
        if unknown:
            raise ValueError(
                f"data.generator has unknown options {sorted(unknown)}; known: {sorted(LRA_GENERATOR)}"
            )
        if self.vocab_size is not None and self.vocab_size != len(VOCAB) + 1:
            raise ValueError(
                f"data.vocab_size={self.vocab_size} but ListOps has {len(VOCAB) + 1} ids; set 16"
            )

    def synthetic_options(self) -> dict[str, Any]:
        return {
            "num_train": 256,
            "num_val": 64,
            "num_test": 64,
            "max_depth": 5,
            "max_args": 4,
            "min_length": 10,
            "max_length": 64,
            "seed": self.seed,
        }

    def download_into(self, root: Path) -> None:
        download.download_into(root, download.task_parts("listops"))

    def generated_folder(self) -> Path:
        if self.generator == LRA_GENERATOR:
            return self.root_dir / "listops-1000"
        return self.root_dir / f"listops-generated-{options_hash(self.generator)}"

    def check_folder(self, folder: Path) -> None:
        super().check_folder(folder)
        record = folder / "generator.json"
        if record.exists() and not self.synthetic:
            used = json.loads(record.read_text())
            differ = sorted(k for k in LRA_GENERATOR if used.get(k) != self.generator.get(k))
            if differ:
                raise ValueError(
                    f"{folder} was generated with other options ({', '.join(f'data.generator.{k}={used.get(k)}' for k in differ)}"
                    f" vs {', '.join(str(self.generator.get(k)) for k in differ)} now): delete it or set data.release_dir "
                    "to another folder"
                )

    def generate(self, folder: Path, synthetic: bool) -> None:
        options = self.synthetic_options() if synthetic else self.generator
        splits = generate_listops(options)
        folder.mkdir(parents=True)
        for split, rows in splits.items():
            write_tsv(folder / SPLIT_FILES[split], rows)
        (folder / "generator.json").write_text(json.dumps(options, indent=2))
        log.info(
            "Generated ListOps (%s) into %s: %s",
            options,
            folder,
            {split: len(rows) for split, rows in splits.items()},
        )

    def read_split(self, folder: Path, split: str) -> Iterator[dict[str, Any]]:
        for ids, label in read_tsv(folder / SPLIT_FILES[split]):
            yield {"input": ids, "label": label}
