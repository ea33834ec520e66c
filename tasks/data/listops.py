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

from rich.progress import Progress

from tasks.data import download
from tasks.data.base import SequenceDataModule, options_hash
from tasks.data.processes import exit_with_parent

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


CLOSE = VOCAB["]"]
OPERATOR_OF_ID = {VOCAB[op]: op for op in OPERATORS}


def parse(tokens: list[str], where: str = "expression") -> tuple[list[int], int]:
    """Token ids and value of a tokenised expression (prefix operators closed by `]`); ValueError naming `where`
    for an unknown token or unbalanced brackets. One pass over flat lists."""
    try:
        ids = [VOCAB[token] for token in tokens]
    except KeyError as error:
        raise ValueError(
            f"{where}: unknown token {error.args[0]!r} (ListOps has digits, {', '.join(OPERATORS)}, ])"
        ) from None
    stack: list[int] = []  # values, and the ids of open operators at the positions in `opened`
    opened: list[int] = []
    for token_id in ids:
        if token_id <= 10:  # a digit: ids 1..10 are the values 0..9
            stack.append(token_id - 1)
        elif token_id != CLOSE:
            opened.append(len(stack))
            stack.append(token_id)
        elif not opened:
            raise ValueError(f"{where}: unbalanced brackets: a ']' closes no operator")
        else:
            start = opened.pop()
            operator, values = OPERATOR_OF_ID[stack[start]], stack[start + 1 :]
            if not values:
                raise ValueError(f"{where}: {operator} closed by ']' without arguments")
            del stack[start:]
            stack.append(apply(operator, values))
    if opened:
        raise ValueError(f"{where}: unbalanced brackets: {len(opened)} operator(s) not closed by ']'")
    if len(stack) != 1:
        raise ValueError(f"{where}: expected one expression, found {len(stack)} at the top level")
    return ids, stack[0]


def evaluate(tokens: list[str]) -> int:
    """Value of a tokenised expression; raises ValueError if malformed."""
    return parse(tokens)[1]


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
    pool = context.Pool(processes, exit_with_parent, (os.getpid(),)) if processes > 1 else None
    with (
        pool or contextlib.nullcontext(),
        Progress(transient=True) as progress,
    ):  # one bar, not a line per shard
        bar = progress.add_task("ListOps generator", total=wanted)
        while len(examples) < wanted:
            quota = -(-(wanted - len(examples)) // SHARDS)
            jobs = [(options, shard, quota) for shard in range(first_shard, first_shard + SHARDS)]
            for rows in pool.imap(_accepted_trees_job, jobs) if pool else map(_accepted_trees_job, jobs):
                for text, value in rows:
                    if len(examples) < wanted:
                        examples.setdefault(text, value)
                progress.update(bar, completed=len(examples))
            first_shard += SHARDS
    log.info("ListOps generator: %d examples from %d seeded streams", len(examples), first_shard)
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
    """Token ids and label of every row; header optional, CRLF or LF. Errors name the file and line: bytes that are
    not UTF-8, a row without two columns, an empty Source, unbalanced parentheses or brackets, an unknown token, a
    Target that is not a digit. A Target other than the expression's value is kept, counted and warned about (the
    released files have none: such rows come from an edited file or another generator)."""
    wrong, first_wrong, rows = 0, "", 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            where = f"{path}:{line_number}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{where}: byte 0x{raw[error.start]:02x} at column {error.start + 1} is not UTF-8 text "
                    "(ListOps files are ASCII)"
                ) from None
            if not line.strip():
                continue
            columns = line.split("\t")
            if line_number == 1 and [c.strip().lower() for c in columns] == ["source", "target"]:
                continue
            if len(columns) != 2:
                raise ValueError(
                    f"{where}: expected 2 tab-separated columns (Source, Target), found {len(columns)}"
                )
            source, target = columns
            if not source.strip():
                raise ValueError(f"{where}: the Source expression is empty")
            if source.count("(") != source.count(")"):
                raise ValueError(
                    f"{where}: unbalanced parentheses ({source.count('(')} '(' and {source.count(')')} ')')"
                )
            try:
                label = int(target)
            except ValueError:
                raise ValueError(f"{where}: Target {target!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise ValueError(f"{where}: Target {label} is outside 0..9")
            ids, value = parse(tokenize(source), where)
            rows += 1
            if value != label:
                wrong += 1
                first_wrong = first_wrong or f"line {line_number}: Target {label}, value {value}"
            yield ids, label
    if wrong:
        log.warning(
            "%s: %d of %d rows have a Target other than their expression's value (first: %s); kept as labelled",
            path,
            wrong,
            rows,
            first_wrong,
        )


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
        log.info("Generated ListOps (%s): %s", options, {split: len(rows) for split, rows in splits.items()})

    def read_split(self, folder: Path, split: str) -> Iterator[dict[str, Any]]:
        for ids, label in read_tsv(folder / SPLIT_FILES[split]):
            yield {"input": ids, "label": label}
