"""IMDB readers (every released layout), LRA byte tokenisation, s4 character vocabulary, stand-in."""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tasks.data.text import TextDataModule, imdb_source, write_standin_imdb
from tasks.data.tokenizers import ByteTokenizer, CharTokenizer, decode_bytes

NON_ASCII = "Ça a été «génial» — 映画 😀<br />"


def write_review(root, split, folder, name, raw: bytes):
    path = root / "aclImdb" / split / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def write_parquet(path, texts, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts, "label": labels}), path)


def find_imdb(root, hub_cache, **options):
    """The IMDB copy the datamodule finds under `root` (or in `hub_cache`)."""
    folder = TextDataModule(
        root_dir=str(root), vocab_size=257, hub_cache=str(hub_cache), **options
    ).raw_folder()
    return imdb_source(folder)


def read_all(source, split):
    return [(text, label) for text, label, _ in source.read(split)]


def test_aclimdb_tree_labels_from_folders_ignores_unsup_counts_empty(tmp_path, caplog):
    write_review(tmp_path, "train", "pos", "0_9.txt", NON_ASCII.encode())
    write_review(tmp_path, "train", "neg", "1_2.txt", b"bad \xff\xfe bytes")  # not UTF-8
    write_review(tmp_path, "train", "neg", "2_3.txt", b"  \n")  # empty review
    write_review(tmp_path, "train", "unsup", "3_0.txt", b"no label")
    for label in ("neg", "pos"):
        write_review(tmp_path, "test", label, "0_1.txt", b"test")
    source = find_imdb(tmp_path, tmp_path / "hub")
    assert source.kind == "aclimdb"
    with caplog.at_level(logging.WARNING):
        rows = read_all(source, "train")
    assert [label for _, label in rows] == [0, 1]
    assert rows[1][0] == NON_ASCII
    assert "skipped 1 empty review file" in caplog.text and "2_3.txt" in caplog.text
    # the invalid bytes survive as bytes: 0xff -> 256, 0xfe -> 255
    assert ByteTokenizer()(rows[0][0]).tolist() == [b + 1 for b in b"bad \xff\xfe bytes"]


def test_aclimdb_missing_label_folder_names_it(tmp_path):
    write_review(tmp_path, "train", "pos", "0_9.txt", b"fine")
    for label in ("neg", "pos"):
        write_review(tmp_path, "test", label, "0_1.txt", b"test")
    with pytest.raises(FileNotFoundError, match=r"aclImdb/train/neg"):
        find_imdb(tmp_path, tmp_path / "hub")


@pytest.mark.parametrize("layout", ["plain_text", "imdb/plain_text", "hub"])
def test_parquet_layouts(tmp_path, layout):
    folder = (
        tmp_path / "hub" / "datasets--stanfordnlp--imdb" / "snapshots" / "abc123" / "plain_text"
        if layout == "hub"
        else tmp_path / "data" / layout
    )
    write_parquet(folder / "train-00000-of-00001.parquet", ["neg one", NON_ASCII], [0, 1])
    write_parquet(folder / "test-00000-of-00001.parquet", ["t"], [1])
    source = find_imdb(tmp_path / "data", tmp_path / "hub")
    assert (source.kind, source.path) == ("parquet", folder)
    assert read_all(source, "train") == [("neg one", 0), (NON_ASCII, 1)]
    assert read_all(source, "test") == [("t", 1)]


def test_parquet_bad_label_and_missing_column_name_file_and_row(tmp_path):
    folder = tmp_path / "plain_text"
    write_parquet(folder / "train-00000-of-00001.parquet", ["a", "b"], [1, -1])
    write_parquet(folder / "test-00000-of-00001.parquet", ["t"], [1])
    source = find_imdb(tmp_path, tmp_path / "hub")
    with pytest.raises(ValueError, match=r"train-00000-of-00001.parquet, row 1: label -1"):
        read_all(source, "train")
    pq.write_table(pa.table({"review": ["a"]}), folder / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label', 'text'\]"):
        read_all(source, "train")
    with pytest.raises(FileNotFoundError, match=r"plain_text/validation-\*\.parquet"):
        read_all(source, "validation")


def test_missing_imdb_names_every_place_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_imdb(tmp_path, tmp_path / "hub")
    message = str(error.value)
    assert str(tmp_path / "aclImdb") in message and str(tmp_path / "plain_text") in message
    assert "data.download=true" in message and "data.synthetic=true" in message


def test_download_hf_writes_parquet_files_that_are_found_again(tmp_path, monkeypatch):
    import datasets

    from tasks.data import download

    monkeypatch.setitem(download.EXPECTED, "text", {"train reviews": 2, "test reviews": 2})  # this tiny copy
    calls = []

    def load_dataset(name, split, cache_dir):
        calls.append((name, split, cache_dir))
        return datasets.Dataset.from_dict({"text": [f"{split} review", NON_ASCII], "label": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    source = find_imdb(tmp_path, tmp_path / "hub", download="hf", hf_cache_dir=str(tmp_path / "hf"))
    assert (source.kind, source.path) == ("parquet", tmp_path / "imdb" / "plain_text")
    assert calls == [("stanfordnlp/imdb", s, str(tmp_path / "hf")) for s in ("train", "test")]
    assert read_all(source, "test") == [("test review", 0), (NON_ASCII, 1)]
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: pytest.fail("found on disk: no new download")
    )
    assert find_imdb(tmp_path, tmp_path / "hub", download="hf").path == source.path


def test_byte_tokenizer_is_lras_rule():
    ids = ByteTokenizer()(NON_ASCII)
    assert ids.tolist() == [b + 1 for b in NON_ASCII.encode("utf-8")]  # id = byte + 1, 0 kept for padding
    assert len(ids) > len(NON_ASCII)  # bytes, not characters
    assert ids.min() >= 1 and ids.max() <= 256 and ByteTokenizer.vocab_size == 257


def test_char_tokenizer_is_s4s_vocabulary():
    tokenizer = CharTokenizer.build(["aab", "abé"], min_freq=2, max_length=4)
    assert tokenizer.itos == ["<pad>", "<unk>", "<eos>", "a", "b"]  # by frequency, é below min_freq
    assert tokenizer("béa").tolist() == [4, 1, 3, 2]  # é -> <unk>, <eos> appended
    assert tokenizer("aaaaaa").tolist() == [3, 3, 3, 2]  # max_length includes <eos>


def test_standin_tree_is_balanced_and_readable(tmp_path):
    write_standin_imdb(tmp_path / "aclImdb", num_train=8, num_test=4, seed=0, max_bytes=600)
    source = find_imdb(tmp_path, tmp_path / "hub")
    train = read_all(source, "train")
    assert sorted(label for _, label in train) == [0] * 4 + [1] * 4
    assert len(read_all(source, "test")) == 4
    lengths = [len(ByteTokenizer()(text)) for text, _ in train]
    assert max(lengths) <= 600 and min(lengths) >= 100
    assert any(np.any(ByteTokenizer()(text) > 128) for text, _ in train)  # non-ASCII bytes present
    assert decode_bytes(b"<br />") in train[0][0] or decode_bytes(b"<br />") in train[-1][0]


# ---- datamodule ------------------------------------------------------------------------------------------------


def text_module(tmp_path, **options):
    options = {"root_dir": str(tmp_path), "vocab_size": 257, "max_length": 64, "batch_size": 4, **options}
    module = TextDataModule(**options)
    module.prepare_data()
    module.setup()
    return module


def small_tree(tmp_path, n=20):
    for i in range(n):
        write_review(
            tmp_path, "train", ("neg", "pos")[i % 2], f"{i}_{i % 10}.txt", f"{i} {NON_ASCII}".encode()
        )
        write_review(tmp_path, "test", ("neg", "pos")[i % 2], f"{i}_{i % 10}.txt", f"test {i}".encode())


def column(dataset, name="input"):
    return [tuple(row[name].tolist()) for row in dataset]


def test_datamodule_bytes_truncation_and_held_out_validation(tmp_path):
    small_tree(tmp_path)
    module = text_module(tmp_path, max_length=10)
    train, val, test = (column(module.splits[split]) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (18, 2, 20)  # val_split 0.1 of 20 train reviews
    assert not set(train) & set(val)
    everything = {tuple(b + 1 for b in f"{i} {NON_ASCII}".encode()[:10]) for i in range(20)}
    assert set(train) | set(val) == everything  # LRA's byte rule, truncated to max_length
    batch = next(iter(module.train_dataloader()))
    assert batch["input"].dtype == torch.long and batch["input"].shape == (4, 10)
    assert batch["label"].dtype == torch.long and "mask" not in batch  # nothing padded at length 10
    eval_batch = next(iter(module.test_dataloader()))
    assert eval_batch["mask"].dtype == torch.bool and eval_batch["mask"].sum(1).tolist() == [
        6,
        7,
        7,
        7,
    ]  # "test 0", "test 10", ... (neg files first, sorted)


def test_held_out_slice_is_seeded(tmp_path):
    small_tree(tmp_path)
    first = column(text_module(tmp_path, split_seed=3, cache_dir=str(tmp_path / "a")).splits["val"])
    again = column(text_module(tmp_path, split_seed=3, cache_dir=str(tmp_path / "b")).splits["val"])
    other = column(text_module(tmp_path, split_seed=4, cache_dir=str(tmp_path / "c")).splits["val"])
    assert first == again and first != other


def test_val_split_test_is_the_lra_protocol_and_is_logged(tmp_path, caplog):
    small_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        module = text_module(tmp_path, val_split="test")
    assert column(module.splits["val"]) == column(module.splits["test"])
    assert len(module.splits["train"]) == 20
    assert "checkpoint selection sees the test set" in caplog.text


def test_char_vocabulary_datamodule(tmp_path):
    small_tree(tmp_path)
    module = text_module(tmp_path, tokenizer="char", char_min_freq=2, max_length=8)
    ids = module.splits["train"][0]["input"].tolist()
    assert len(ids) == 8 and ids[-1] == 2  # s4: <eos> closes the truncated text
    with pytest.raises(ValueError, match=r"data.vocab_size=5: raise data.vocab_size or data.char_min_freq"):
        text_module(tmp_path, tokenizer="char", vocab_size=5, cache_dir=str(tmp_path / "other"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_split": 1.5}, r"data.val_split=1.5"),
        ({"val_split": "valid"}, r"data.val_split='valid'"),
        ({"vocab_size": 256}, r"data.vocab_size=256 but byte tokens need 257"),
        ({"tokenizer": "word"}, r"data.tokenizer='word'"),
        ({"standin": {"num_val": 3}}, r"data.standin has unknown options \['num_val'\]"),
    ],
)
def test_bad_options_name_the_option(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        TextDataModule(root_dir=str(tmp_path), vocab_size=options.pop("vocab_size", 257), **options)


def test_missing_data_names_paths_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"aclImdb_v1.tar.gz"):
        TextDataModule(root_dir=str(tmp_path), vocab_size=257).prepare_data()


def test_synthetic_standin_is_said_loudly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        module = text_module(
            tmp_path, synthetic=True, standin={"num_train": 20, "num_test": 10, "max_bytes": 400}
        )
    assert "STAND-IN DATA" in caplog.text and "NOT the benchmark" in caplog.text
    assert (len(module.splits["train"]), len(module.splits["val"]), len(module.splits["test"])) == (18, 2, 10)
