"""ListOps: generator, tsv reader (CRLF, header, bad rows), release layouts, cache and batches."""

from __future__ import annotations

import collections
import logging
import re
import statistics
from pathlib import Path

import pytest
import torch

from tasks.data.listops import (
    LRA_GENERATOR,
    OPERATORS,
    VOCAB,
    ListOpsDataModule,
    evaluate,
    generate_listops,
    read_tsv,
    tokenize,
    write_tsv,
)

SMALL = {
    "num_train": 300,
    "num_val": 50,
    "num_test": 50,
    "max_depth": 6,
    "max_args": 5,
    "min_length": 20,
    "max_length": 100,
    "seed": 3,
}


def small_module(root: Path, **kwargs) -> ListOpsDataModule:
    options = {
        "root_dir": str(root),
        "vocab_size": 16,
        "num_classes": 10,
        "max_length": 2000,
        "batch_size": 16,
        "generator": SMALL,
        **kwargs,
    }
    return ListOpsDataModule(**options)


def test_generator_labels_lengths_and_distribution() -> None:
    splits = generate_listops(SMALL)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [300, 50, 50]
    rows = [row for split in splits.values() for row in split]
    assert len({text for text, _ in rows}) == len(rows), "duplicates must be dropped"
    labels = collections.Counter()
    for text, label in rows:
        tokens = tokenize(text)
        assert evaluate(tokens) == label
        assert SMALL["min_length"] < len(tokens) < SMALL["max_length"]
        assert text.count("(") == text.count(")")
        labels[label] += 1
    assert set(labels) == set(range(10))
    assert max(labels.values()) / len(rows) < 0.35  # skewed towards 0 and 9, but no class dominates
    assert generate_listops(SMALL) == splits, "seeded: the same options give the same data"


def test_serialisation_matches_lra_example() -> None:
    # LRA writes MAX(2, MIN(9, 4)) as nested pairs; our evaluator and tokeniser agree on it
    text = "( ( ( [MAX 2 ) ( ( ( [MIN 9 ) 4 ) ] ) ) ] )"
    assert tokenize(text) == ["[MAX", "2", "[MIN", "9", "4", "]", "]"]
    assert evaluate(tokenize(text)) == 4
    assert evaluate(["[MED", "1", "2", "]"]) == 1 and evaluate(["[SM", "7", "8", "]"]) == 5


def test_lra_defaults() -> None:
    assert LRA_GENERATOR == {
        "num_train": 96000,
        "num_val": 2000,
        "num_test": 2000,
        "max_depth": 10,
        "max_args": 10,
        "min_length": 500,
        "max_length": 2000,
        "seed": 0,
    }
    assert set(OPERATORS) == {"[MIN", "[MAX", "[MED", "[SM"} and len(VOCAB) + 1 == 16


def test_reader_accepts_crlf_lf_and_missing_header(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.tsv"
    write_tsv(crlf, [("( ( ( [MAX 1 ) 7 ) ] )", 7)])
    assert b"\r\n" in crlf.read_bytes()
    lf = tmp_path / "lf.tsv"
    lf.write_text("( ( ( [MAX 1 ) 7 ) ] )\t7\n")
    expected = [([VOCAB["[MAX"], VOCAB["1"], VOCAB["7"], VOCAB["]"]], 7)]
    assert list(read_tsv(crlf)) == expected == list(read_tsv(lf))


@pytest.mark.parametrize(
    "row,message",
    [
        ("[MAX 1 2 ]", "expected 2 tab-separated columns"),
        ("[MAX 1 2 ]\tseven", "is not an integer"),
        ("[MAX 1 2 ]\t12", "outside 0..9"),
        ("[MEAN 1 2 ]\t1", "unknown token '[MEAN'"),
        ("\t1", "the Source expression is empty"),
        ("( [MAX 1 2 ]\t2", "unbalanced parentheses (1 '(' and 0 ')')"),
        ("[MAX 1 [MIN 2 ]\t2", "unbalanced brackets: 1 operator(s) not closed"),
        ("[MAX 1 2 ] ]\t2", "unbalanced brackets: a ']' closes no operator"),
        ("[MAX ]\t2", "[MAX closed by ']' without arguments"),
        ("1 2\t2", "expected one expression, found 2"),
    ],
)
def test_reader_names_file_and_line_of_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "basic_train.tsv"
    path.write_text(f"Source\tTarget\r\n[MAX 1 2 ]\t2\r\n{row}\r\n")
    with pytest.raises(ValueError, match=rf"basic_train.tsv:3: .*{re.escape(message)}"):
        list(read_tsv(path))


@pytest.mark.parametrize(
    "layout", ["listops-1000", "lra_release/listops-1000", "lra_release/lra_release/listops-1000", "listops"]
)
def test_finds_release_layouts(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / layout
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        write_tsv(
            folder / f"basic_{split}.tsv", [("( ( ( [SM 4 ) 5 ) ] )", 9), ("( ( ( [MIN 4 ) 5 ) ] )", 4)]
        )
    module = small_module(tmp_path)
    assert module.raw_folder() == folder
    module.prepare_data()
    module.setup()
    assert len(module.splits["val"]) == 2


def test_missing_split_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "listops-1000"
    folder.mkdir()
    write_tsv(folder / "basic_train.tsv", [("( ( ( [SM 4 ) 5 ) ] )", 9)])
    with pytest.raises(FileNotFoundError, match="has no basic_val.tsv"):
        small_module(tmp_path).prepare_data()


def test_generates_when_absent_then_caches(tmp_path: Path) -> None:
    module = small_module(tmp_path)
    module.prepare_data()
    generated = module.raw_folder()
    assert generated.name.startswith("listops-generated-") and (generated / "basic_test.tsv").exists()
    caches = list((tmp_path / "cache").iterdir())
    assert len(caches) == 1 and not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    module.setup()
    assert [len(module.splits[s]) for s in ("train", "val", "test")] == [300, 50, 50]
    module.generate = lambda *args: pytest.fail("the generated folder must be found again, not regenerated")
    assert module.raw_folder() == generated
    # other generator options must not silently reuse the folder
    with pytest.raises(ValueError, match="data.generator.seed"):
        small_module(tmp_path, release_dir=str(generated), generator={**SMALL, "seed": 4}).prepare_data()
    # a token-changing option gets its own cache
    small_module(tmp_path, max_length=30).prepare_data()
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_batches_follow_contract_one(tmp_path: Path) -> None:
    module = small_module(tmp_path, eval_batch_size=64)
    module.prepare_data()
    module.setup()
    batch = next(iter(module.train_dataloader()))
    assert batch["input"].dtype == torch.long and batch["label"].shape == (16,)
    assert batch["mask"].dtype == torch.bool and batch["mask"].shape == batch["input"].shape
    assert (batch["input"][~batch["mask"]] == 0).all() and (batch["input"][batch["mask"]] > 0).all()
    val_batches = list(module.val_dataloader())
    assert sum(len(b["label"]) for b in val_batches) == 50, "eval keeps the last partial batch"


def test_synthetic_is_small_and_statistics_hold(tmp_path: Path) -> None:
    module = small_module(tmp_path, synthetic=True)
    module.prepare_data()
    module.setup()
    lengths = [len(x) for x in module.splits["train"]["input"]]
    assert len(lengths) == 256 and 10 < min(lengths) and max(lengths) < 64
    assert statistics.mean(int(y) for y in module.splits["train"]["label"]) > 0


def test_reader_names_the_line_of_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "basic_val.tsv"
    path.write_bytes(b"Source\tTarget\r\n[MAX 1 2 ]\t2\r\n[MAX 1 \xff ]\t2\r\n")
    with pytest.raises(ValueError, match=r"basic_val.tsv:3: byte 0xff at column 8 is not UTF-8"):
        list(read_tsv(path))


def test_targets_other_than_the_value_are_kept_counted_and_warned(tmp_path: Path, caplog) -> None:
    path = tmp_path / "basic_test.tsv"
    path.write_text("[MAX 1 2 ]\t2\n[MIN 1 2 ]\t2\n[SM 5 7 ]\t2\n[MED 3 ]\t9\n")
    with caplog.at_level(logging.WARNING):
        labels = [label for _, label in read_tsv(path)]
    assert labels == [2, 2, 2, 9]
    assert (
        "2 of 4 rows have a Target other than their expression's value (first: line 2: Target 2, value 1)"
        in (caplog.text)
    )
