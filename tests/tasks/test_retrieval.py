"""AAN reader (released tsv, doubled folder, float labels, no quoting, huge fields), errors, stand-in."""

import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.data.retrieval import (
    AAN_FILES,
    RetrievalDataModule,
    read_aan,
    topic_vocabularies,
    write_standin_aan,
)

REPO = Path(__file__).resolve().parents[2]


def write_tsv(folder, split, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / AAN_FILES[split]).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def find_aan(root):
    return RetrievalDataModule(root_dir=str(root), vocab_size=257, dual_encoder=True).raw_folder()


def write_release(data_dir, lines=("1.0\tA-1\tB-2\tfirst\tsecond",)):
    folder = data_dir / "lra_release" / "lra_release" / "tsv_data"
    for split in ("train", "val", "test"):
        write_tsv(folder, split, lines)
    return folder


def test_doubled_release_folder_float_labels_and_quotes(tmp_path):
    huge = "x" * 200_000  # above csv's default field-size limit
    folder = write_release(
        tmp_path,
        [
            '1.0\tP10-1001\tW05-0203\the said "quoted\tsecond doc',
            f'0.0\tA\tB\t{huge}\t"unbalanced quote é',
        ],
    )
    assert find_aan(tmp_path) == folder
    rows = list(read_aan(folder / AAN_FILES["train"]))
    assert [(t1[:12], t2, label) for t1, t2, label, _ in rows] == [
        ('he said "quo', "second doc", 1),
        ("xxxxxxxxxxxx", '"unbalanced quote é', 0),
    ]
    assert len(rows[1][0]) == 200_000


@pytest.mark.parametrize("layout", ["lra_release/tsv_data", "tsv_data", "aan"])
def test_other_layouts(tmp_path, layout):
    for split in ("train", "val", "test"):
        write_tsv(tmp_path / layout, split, ["0\ta\tb\tc\td"])
    assert find_aan(tmp_path) == tmp_path / layout


def test_missing_split_names_the_file(tmp_path):
    folder = write_release(tmp_path)
    (folder / AAN_FILES["val"]).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"lra_release/tsv_data has no new_aan_pairs\.eval\.tsv \(the val split\)"
    ):
        find_aan(tmp_path)


def test_missing_release_names_places_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_aan(tmp_path)
    assert str(tmp_path / "lra_release/lra_release/tsv_data") in str(error.value)
    assert "lra_release.gz" in str(error.value) and "data.synthetic=true" in str(error.value)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("1.0\tA\tB\tonly four", r"line 2: 4 tab-separated columns, expected 5"),
        ("1.0\tA\tB\tc\td\textra", r"line 2: 6 tab-separated columns"),
        ("2.0\tA\tB\tc\td", r"line 2: label '2.0' is not 0 or 1"),
        ("yes\tA\tB\tc\td", r"line 2: label 'yes' is not 0 or 1"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, bad_line, message):
    write_tsv(tmp_path, "train", ["0.0\tA\tB\tc\td", bad_line])
    with pytest.raises(ValueError, match=r"new_aan_pairs\.train\.tsv, " + message):
        list(read_aan(tmp_path / AAN_FILES["train"]))


def test_blank_lines_and_empty_documents_are_counted(tmp_path, caplog):
    write_tsv(tmp_path, "train", ["1.0\tA\tB\tc\td", "", "0.0\tA\tB\t\td"])
    with caplog.at_level(logging.WARNING):
        rows = list(read_aan(tmp_path / AAN_FILES["train"]))
    assert len(rows) == 1
    assert "skipped 1 blank line(s) and 1 pair(s) with an empty document" in caplog.text


def test_standin_is_balanced_and_parses(tmp_path):
    write_standin_aan(tmp_path, num_train=10, num_eval=4, seed=0, max_bytes=1500)
    rows = list(read_aan(tmp_path / AAN_FILES["train"]))
    assert sorted(label for *_, label, _ in rows) == [0] * 5 + [1] * 5
    assert all(500 <= len(t1) <= 1500 and 500 <= len(t2) <= 1500 for t1, t2, _, _ in rows)
    assert any('"' in t1 for t1, _, _, _ in rows)
    assert (tmp_path / AAN_FILES["train"]).read_text().startswith(("0.0\t", "1.0\t"))


def test_standin_topics_use_their_own_letters():
    topics = topic_vocabularies(4, random.Random(0))
    consonants = [{word[0] for word in words} for words in topics]
    assert all(not a & b for i, a in enumerate(consonants) for b in consonants[i + 1 :])
    with pytest.raises(ValueError, match=r"data.standin.num_topics=27: choose 2..26"):
        topic_vocabularies(27, random.Random(0))


# ---- datamodule ------------------------------------------------------------------------------------------------


def test_datamodule_batches_carry_both_documents(tmp_path):
    write_release(tmp_path, ["1.0\tA\tB\tcafé\tsecond document", "0.0\tC\tD\t3rd\tx"])
    module = RetrievalDataModule(
        root_dir=str(tmp_path), vocab_size=257, dual_encoder=True, max_length=8, batch_size=2
    )
    module.prepare_data()
    module.setup()
    batch = next(iter(module.val_dataloader()))
    assert set(batch) == {"input", "mask", "input2", "mask2", "label"}
    assert batch["input"].tolist() == [[b + 1 for b in "café".encode()], [b + 1 for b in b"3rd"] + [0, 0]]
    assert batch["mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]  # padded to the longest (5 bytes)
    assert batch["input2"][0].tolist() == [b + 1 for b in b"second d"]  # truncated to max_length
    assert batch["mask2"].shape == batch["input2"].shape and batch["label"].tolist() == [1, 0]
    assert batch["input"].dtype == batch["input2"].dtype == torch.long


def test_datamodule_needs_dual_encoder(tmp_path):
    with pytest.raises(ValueError, match=r"data.dual_encoder must be true"):
        RetrievalDataModule(root_dir=str(tmp_path), vocab_size=257, dual_encoder=False)


def test_char_vocabulary_counts_both_columns(tmp_path):
    write_release(tmp_path, ["1.0\tA\tB\tab\tcd"])
    module = RetrievalDataModule(
        root_dir=str(tmp_path), vocab_size=257, dual_encoder=True, tokenizer="char", char_min_freq=1
    )
    module.prepare_data()
    module.setup()
    assert module.splits["train"][0]["input"].tolist() == [3, 4, 2]  # a b <eos>
    assert module.splits["train"][0]["input2"].tolist() == [5, 6, 2]  # c d <eos>


# ---- streaming memory --------------------------------------------------------------------------------------------

PEAK_ANON_MEMORY = """
import sys, threading, time
import datasets
from tasks.data.retrieval import RetrievalDataModule

def anon_mb():  # private memory only: the Arrow cache's memory-mapped pages are page cache, not held data
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

datasets.disable_progress_bars()
module = RetrievalDataModule(root_dir=sys.argv[1], vocab_size=257, dual_encoder=True, max_length=4000)
base = peak = anon_mb()
done = threading.Event()
def watch():
    global peak
    while not done.is_set():
        peak = max(peak, anon_mb())
        time.sleep(0.02)
watcher = threading.Thread(target=watch)
watcher.start()
module.prepare_data()
done.set()
watcher.join()
print(f"{peak - base:.1f}")
"""


@pytest.mark.slow
def test_streaming_reader_memory_stays_flat_on_a_200mb_file(tmp_path):
    document = ('word é "quoted" ' * 400)[:5000]
    row = f"1.0\tA\tB\t{document}\t{document}\n"
    folder = tmp_path / "tsv_data"
    write_tsv(folder, "val", [row.strip()])
    write_tsv(folder, "test", [row.strip()])
    with open(folder / AAN_FILES["train"], "w", encoding="utf-8") as handle:
        for _ in range(200_000_000 // len(row.encode())):
            handle.write(row)
    assert (folder / AAN_FILES["train"]).stat().st_size > 195_000_000
    # holding the file would take > 200 MB of text, or ~190 MB of int16 tokens; streaming takes a few batches
    result = subprocess.run(
        [sys.executable, "-c", PEAK_ANON_MEMORY, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    growth_mb = float(result.stdout.split()[-1])
    assert growth_mb < 120, f"private memory grew by {growth_mb:.0f} MB while caching a 200 MB tsv"
