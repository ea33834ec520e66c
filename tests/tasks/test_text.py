"""IMDB readers (every released layout), LRA byte tokenisation, s4 character vocabulary, stand-in."""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.text import (
    ByteTokenizer,
    CharTokenizer,
    decode_bytes,
    find_imdb,
    write_standin_imdb,
)

NON_ASCII = "Ça a été «génial» — 映画 😀<br />"


def write_review(root, split, folder, name, raw: bytes):
    path = root / "aclImdb" / split / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def write_parquet(path, texts, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts, "label": labels}), path)


def read_all(source, split):
    return [(text, label) for text, label, _ in source.read(split)]


def test_aclimdb_tree_labels_from_folders_ignores_unsup_counts_empty(tmp_path, caplog):
    write_review(tmp_path, "train", "pos", "0_9.txt", NON_ASCII.encode())
    write_review(tmp_path, "train", "neg", "1_2.txt", b"bad \xff\xfe bytes")  # not UTF-8
    write_review(tmp_path, "train", "neg", "2_3.txt", b"  \n")  # empty review
    write_review(tmp_path, "train", "unsup", "3_0.txt", b"no label")
    source = find_imdb(tmp_path, download=False, hub_cache=tmp_path / "hub")
    assert source.kind == "aclimdb"
    with caplog.at_level(logging.WARNING):
        rows = read_all(source, "train")
    assert [label for _, label in rows] == [0, 1]
    assert rows[1][0] == NON_ASCII
    assert "skipped 1 empty review file" in caplog.text and "2_3.txt" in caplog.text
    # the invalid bytes survive as bytes: 0xff -> 256, 0xfe -> 255
    assert ByteTokenizer(8)(rows[0][0]).tolist() == [ord(c) + 1 for c in "bad "] + [
        256,
        255,
        ord(" ") + 1,
        ord("b") + 1,
    ]


def test_aclimdb_missing_label_folder_names_it(tmp_path):
    write_review(tmp_path, "train", "pos", "0_9.txt", b"fine")
    source = find_imdb(tmp_path, download=False, hub_cache=tmp_path / "hub")
    with pytest.raises(FileNotFoundError, match=r"aclImdb/train/neg"):
        read_all(source, "train")


@pytest.mark.parametrize("layout", ["plain_text", "imdb/plain_text", "hub"])
def test_parquet_layouts(tmp_path, layout):
    folder = (
        tmp_path / "hub" / "datasets--stanfordnlp--imdb" / "snapshots" / "abc123" / "plain_text"
        if layout == "hub"
        else tmp_path / "data" / layout
    )
    write_parquet(folder / "train-00000-of-00001.parquet", ["neg one", NON_ASCII], [0, 1])
    write_parquet(folder / "test-00000-of-00001.parquet", ["t"], [1])
    source = find_imdb(tmp_path / "data", download=False, hub_cache=tmp_path / "hub")
    assert (source.kind, source.path) == ("parquet", folder)
    assert read_all(source, "train") == [("neg one", 0), (NON_ASCII, 1)]
    assert read_all(source, "test") == [("t", 1)]


def test_parquet_bad_label_and_missing_column_name_file_and_row(tmp_path):
    folder = tmp_path / "plain_text"
    write_parquet(folder / "train-00000-of-00001.parquet", ["a", "b"], [1, -1])
    source = find_imdb(tmp_path, download=False, hub_cache=tmp_path / "hub")
    with pytest.raises(ValueError, match=r"train-00000-of-00001.parquet, row 1: label -1"):
        read_all(source, "train")
    pq.write_table(pa.table({"review": ["a"]}), folder / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label', 'text'\]"):
        read_all(source, "train")
    with pytest.raises(FileNotFoundError, match=r"plain_text/validation-\*\.parquet"):
        read_all(source, "validation")


def test_missing_imdb_names_every_place_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_imdb(tmp_path, download=False, hub_cache=tmp_path / "hub")
    message = str(error.value)
    assert str(tmp_path / "aclImdb") in message and str(tmp_path / "plain_text") in message
    assert "data.download=true" in message and "data.synthetic=true" in message
    assert find_imdb(tmp_path, download=True, hub_cache=tmp_path / "hub").kind == "hf"


def test_byte_tokenizer_is_lras_rule():
    ids = ByteTokenizer(max_length=4000)(NON_ASCII)
    assert ids.tolist() == [b + 1 for b in NON_ASCII.encode("utf-8")]  # id = byte + 1, 0 kept for padding
    assert len(ids) > len(NON_ASCII)  # bytes, not characters
    assert ids.min() >= 1 and ids.max() <= 256 and ByteTokenizer.vocab_size == 257
    assert ByteTokenizer(max_length=5)(NON_ASCII).tolist() == [b + 1 for b in NON_ASCII.encode()[:5]]


def test_char_tokenizer_is_s4s_vocabulary():
    tokenizer = CharTokenizer.build(["aab", "abé"], min_freq=2, max_length=4)
    assert tokenizer.itos == ["<pad>", "<unk>", "<eos>", "a", "b"]  # by frequency, é below min_freq
    assert tokenizer("béa").tolist() == [4, 1, 3, 2]  # é -> <unk>, <eos> appended
    assert tokenizer("aaaaaa").tolist() == [3, 3, 3, 2]  # max_length includes <eos>


def test_standin_tree_is_balanced_and_readable(tmp_path):
    write_standin_imdb(tmp_path, n_train=8, n_test=4, seed=0, max_bytes=600)
    source = find_imdb(tmp_path, download=False, hub_cache=tmp_path / "hub")
    train = read_all(source, "train")
    assert sorted(label for _, label in train) == [0] * 4 + [1] * 4
    assert len(read_all(source, "test")) == 4
    lengths = [len(ByteTokenizer(10**6)(text)) for text, _ in train]
    assert max(lengths) <= 600 and min(lengths) >= 100
    assert any(np.any(ByteTokenizer(10**6)(text) > 128) for text, _ in train)  # non-ASCII bytes present
    assert decode_bytes(b"<br />") in train[0][0] or decode_bytes(b"<br />") in train[-1][0]
