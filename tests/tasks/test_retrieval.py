"""AAN reader (released tsv, doubled folder, float labels, no quoting, huge fields), errors, stand-in."""

import logging

import pytest

from tasks.retrieval import aan_file, find_aan, read_aan, write_standin_aan


def write_tsv(folder, split, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / aan_file(split)).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


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
    rows = list(read_aan(folder / aan_file("train")))
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
    (folder / aan_file("val")).unlink()
    with pytest.raises(FileNotFoundError, match=r"lra_release/lra_release/tsv_data/new_aan_pairs\.eval\.tsv"):
        find_aan(tmp_path)


def test_missing_release_names_places_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_aan(tmp_path)
    assert "lra_release/lra_release/tsv_data/new_aan_pairs.train.tsv" in str(error.value)
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
        list(read_aan(tmp_path / aan_file("train")))


def test_blank_lines_and_empty_documents_are_counted(tmp_path, caplog):
    write_tsv(tmp_path, "train", ["1.0\tA\tB\tc\td", "", "0.0\tA\tB\t\td"])
    with caplog.at_level(logging.WARNING):
        rows = list(read_aan(tmp_path / aan_file("train")))
    assert len(rows) == 1
    assert "skipped 1 blank line(s) and 1 pair(s) with an empty document" in caplog.text


def test_standin_is_balanced_and_parses(tmp_path):
    write_standin_aan(tmp_path, {"train": 10, "val": 4, "test": 4}, seed=0, max_bytes=1500)
    rows = list(read_aan(tmp_path / aan_file("train")))
    assert sorted(label for *_, label, _ in rows) == [0] * 5 + [1] * 5
    assert all(500 <= len(t1) <= 1500 and 500 <= len(t2) <= 1500 for t1, t2, _, _ in rows)
    assert any('"' in t1 for t1, _, _, _ in rows)
    assert (tmp_path / aan_file("train")).read_text().startswith(("0.0\t", "1.0\t"))
