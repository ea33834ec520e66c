"""Pathfinder / Path-X: reader of the released layout, bad input, splits, generator labels, datamodule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from tasks.data import pathfinder as pf
from tasks.data import pathfinder_generator as gen

# A style in which the label can be read off the image: consecutive dashes are 1 px apart (so they touch after
# pixelisation), while different paths keep margin 4 (so they never touch), and markers are the only bright pixels.
CHECKABLE = gen.PathfinderStyle(
    32,
    dash_length=4,
    margins=(4,),
    thickness=1.0,
    continuity=1.8,
    marker_radius=1.5,
    seed_distance=7,
    distractor_dashes=6,
    target_contrast=0.5,
    distractor_contrast=0.5,
    contour_length=6,
    dash_gap=1.0,
)
SMALL = gen.style_for(32, contour_length=4, distractor_dashes=4)
EIGHT = np.ones((3, 3), dtype=bool)


def module(root: Path, **options) -> pf.PathfinderDataModule:
    return pf.PathfinderDataModule(root_dir=str(root), **{"decode_workers": 1, "batch_size": 8, **options})


def write_release(
    root: Path,
    lines_per_file: dict[str, list[str]],
    resolution: int = 32,
    difficulty: str = "curv_contour_length_14",
) -> Path:
    """Metadata files with the given lines, and a random PNG for every line."""
    folder = root / f"pathfinder{resolution}" / difficulty
    (folder / "metadata").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, lines in lines_per_file.items():
        (folder / "metadata" / name).write_text("\n".join(lines) + "\n")
        for line in lines:
            fields = line.split()
            (folder / fields[0]).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(resolution, resolution), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / fields[0] / fields[1])
    return folder


def line(batch: int, index: int, label: int) -> str:
    return f"imgs/{batch} sample_{index}.png {index} {label} 1.0 14 4 2 0.5 1 1"


# --------------------------------------------------------------------------- reader


def test_metadata_files_are_read_in_integer_order(tmp_path):
    folder = write_release(tmp_path, {"10.npy": [line(10, 0, 1)], "2.npy": [line(2, 0, 0), line(2, 1, 1)]})
    samples = pf.read_metadata(folder)
    assert [(s.path.relative_to(folder).as_posix(), s.label) for s in samples] == [
        ("imgs/2/sample_0.png", 0),
        ("imgs/2/sample_1.png", 1),
        ("imgs/10/sample_0.png", 1),
    ]


def test_metadata_line_with_wrong_field_count_names_file_and_line(tmp_path):
    folder = write_release(tmp_path, {"0.npy": [line(0, 0, 1)]})
    (folder / "metadata" / "0.npy").write_text(line(0, 0, 1) + "\nimgs/0 sample_1.png 1 1\n")
    with pytest.raises(ValueError, match=r"0\.npy:2: expected 11 .* found 4"):
        pf.read_metadata(folder)


def test_metadata_label_must_be_binary(tmp_path):
    folder = write_release(tmp_path, {"0.npy": [line(0, 0, 1)]})
    (folder / "metadata" / "0.npy").write_text(line(0, 0, 7))
    with pytest.raises(ValueError, match=r"0\.npy:1: label"):
        pf.read_metadata(folder)


def test_metadata_file_names_must_be_numbers(tmp_path):
    folder = write_release(tmp_path, {"0.npy": [line(0, 0, 1)], "extra.npy": []})
    with pytest.raises(ValueError, match="extra.npy"):
        pf.read_metadata(folder)


@pytest.mark.parametrize("prefix", ["lra_release/lra_release", "lra_release", ".", "pathfinder"])
def test_released_layouts_are_found(tmp_path, prefix):
    folder = write_release(tmp_path / prefix, {"0.npy": [line(0, 0, 1)]}, resolution=128)
    assert module(tmp_path, resolution=128, max_length=128 * 128).raw_folder() == folder


def test_explicit_data_dir(tmp_path):
    folder = write_release(tmp_path / "elsewhere", {"0.npy": [line(0, 0, 1)]})
    assert module(tmp_path, release_dir=str(folder)).raw_folder() == folder
    assert module(tmp_path, release_dir=str(tmp_path / "elsewhere")).raw_folder() == folder


def test_missing_data_names_expected_paths_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        module(tmp_path).raw_folder()
    message = str(err.value)
    assert str(tmp_path / "lra_release/lra_release/pathfinder32/curv_contour_length_14") in message
    assert "lra_release.gz" in message and "data.synthetic=true" in message


def test_folder_without_metadata_is_an_error(tmp_path):
    (tmp_path / "pathfinder32/curv_contour_length_14/imgs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no metadata"):
        module(tmp_path).raw_folder()


def test_empty_png_is_skipped_counted_and_logged(tmp_path, caplog):
    folder = write_release(tmp_path, {"0.npy": [line(0, i, i % 2) for i in range(3)]})
    (folder / "imgs/0/sample_1.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        kept, skipped = pf.drop_empty(pf.read_metadata(folder))
    assert [s.path.name for s in kept] == ["sample_0.png", "sample_2.png"]
    assert skipped == [folder / "imgs/0/sample_1.png"]
    assert "sample_1.png" in caplog.text


def test_missing_png_is_an_error_naming_it(tmp_path):
    folder = write_release(tmp_path, {"0.npy": [line(0, 0, 1)]})
    (folder / "imgs/0/sample_0.png").unlink()
    with pytest.raises(FileNotFoundError, match="sample_0.png"):
        pf.drop_empty(pf.read_metadata(folder))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "size"])
def test_bad_png_is_an_error_naming_it(tmp_path, damage):
    folder = write_release(tmp_path, {"0.npy": [line(0, 0, 1)]})
    path = folder / "imgs/0/sample_0.png"
    if damage == "garbage":
        path.write_bytes(b"not a png at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:60])
    else:
        Image.fromarray(np.zeros((16, 32), dtype=np.uint8), mode="L").save(path)
    with pytest.raises(ValueError, match="sample_0.png"):
        pf.decode_png(path, 32)


def test_decode_reads_grey_pixels(tmp_path):
    pixels = np.arange(32 * 32, dtype=np.uint32).reshape(32, 32).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "a.png")
    np.testing.assert_array_equal(pf.decode_png(tmp_path / "a.png", 32), pixels)


def test_split_is_s4_mega_random_split():
    splits = pf.split_indices(199_999)
    assert {k: len(v) for k, v in splits.items()} == {"train": 160_001, "val": 19_999, "test": 19_999}
    expected = torch.utils.data.random_split(
        range(199_999), [160_001, 19_999, 19_999], generator=torch.Generator().manual_seed(42)
    )
    np.testing.assert_array_equal(splits["val"], expected[1].indices)
    assert len(np.unique(np.concatenate(list(splits.values())))) == 199_999


# --------------------------------------------------------------------------- generator


def marked_ends_connected(image: np.ndarray, marker_level: int = 140) -> bool | None:
    """From the image alone: do the two marker discs lie on one 8-connected trace of non-zero pixels?

    None when the markers cannot be told apart (not exactly two bright blobs)."""
    markers, count = ndimage.label(image > marker_level, structure=EIGHT)
    if count != 2:
        return None
    traces, _ = ndimage.label(image > 0, structure=EIGHT)
    return bool(traces[markers == 1][0] == traces[markers == 2][0])


def test_generator_labels_match_the_image():
    rng = np.random.default_rng(3)
    verdicts = [
        (marked_ends_connected(image), label)
        for image, label, _ in (gen.generate_image(CHECKABLE, rng) for _ in range(60))
    ]
    readable = [(v, label) for v, label in verdicts if v is not None]
    assert len(readable) >= 55
    assert {label for _, label in readable} == {0, 1}
    assert all(v == bool(label) for v, label in readable)


def test_label_check_detects_cut_and_bridged_paths():
    """The check above is not vacuous: cutting a connected path or bridging two paths flips its verdict."""
    rng = np.random.default_rng(4)
    connected = gen.generate_image(CHECKABLE, rng, label=1)[0]
    apart = gen.generate_image(CHECKABLE, rng, label=0)[0]
    assert marked_ends_connected(connected) and marked_ends_connected(apart) is False

    markers, _ = ndimage.label(connected > 140, structure=EIGHT)
    disc = markers == 1
    ring = ndimage.binary_dilation(disc, EIGHT, iterations=3) & ~ndimage.binary_dilation(
        disc, EIGHT, iterations=1
    )
    cut = np.where(ring, 0, connected)
    assert marked_ends_connected(cut) is False

    markers, _ = ndimage.label(apart > 140, structure=EIGHT)
    (y0, x0), (y1, x1) = (np.argwhere(markers == k)[0] for k in (1, 2))
    bridged = apart.copy()
    steps = np.linspace(0, 1, 200)
    bridged[np.rint(y0 + steps * (y1 - y0)).astype(int), np.rint(x0 + steps * (x1 - x0)).astype(int)] = 60
    assert marked_ends_connected(bridged)


def test_generator_writes_released_layout_independent_of_workers(tmp_path):
    one = gen.write_dataset(tmp_path / "a", SMALL, 60, seed=5, images_per_batch=40, workers=1)
    two = gen.write_dataset(tmp_path / "b", SMALL, 60, seed=5, images_per_batch=40, workers=2)
    samples = pf.read_metadata(one)
    assert len(samples) == 60 and {s.label for s in samples} == {0, 1}
    assert sorted(p.name for p in (one / "imgs").iterdir()) == ["0", "1"]
    for a, b in zip(samples, pf.read_metadata(two)):
        np.testing.assert_array_equal(pf.decode_png(a.path, 32), pf.decode_png(b.path, 32))


def test_generate_command(tmp_path, capsys):
    pf.main(
        [
            "generate",
            "--out",
            str(tmp_path),
            "--resolution",
            "64",
            "--num-images",
            "3",
            "--workers",
            "1",
            "--contour-length",
            "4",
        ]
    )
    folder = tmp_path / "pathfinder64/curv_contour_length_14"
    assert len(pf.read_metadata(folder)) == 3
    assert pf.decode_png(folder / "imgs/0/sample_2.png", 64).max() == 255
    assert "wrote 3 images" in capsys.readouterr().out


def test_styles_follow_lra_settings():
    assert gen.style_for(32).num_distractors == 5 and gen.style_for(128).num_distractors == 8
    assert gen.style_for(128).margins == (2, 3)
    assert gen.style_for(64, "easy").contour_length == 6
    with pytest.raises(ValueError, match="difficulty"):
        gen.style_for(32, "impossible")


# --------------------------------------------------------------------------- datamodule


def test_datamodule_reads_release_skips_empty_and_caches(tmp_path, monkeypatch):
    folder = gen.write_dataset(
        tmp_path / "lra_release/lra_release/pathfinder32/curv_contour_length_14", SMALL, 50, seed=1, workers=1
    )
    (folder / "imgs/0/sample_7.png").write_bytes(b"")
    dm = module(tmp_path)
    dm.prepare_data()
    dm.setup()
    assert dm.extras["skipped_empty"].tolist() == [str(folder / "imgs/0/sample_7.png")]
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 41, "val": 4, "test": 4}
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input", "label"}
    assert batch["input"].shape == (4, 1024) and batch["input"].dtype == torch.float32
    assert -1.0 <= batch["input"].min() and batch["input"].max() == 1.0
    samples = pf.drop_empty(pf.read_metadata(folder))[0]
    assert batch["label"].tolist() == [samples[i].label for i in dm.splits["val"].indices]
    first = samples[dm.splits["val"].indices[0]]
    np.testing.assert_allclose(
        batch["input"][0].numpy(), pf.decode_png(first.path, 32).ravel() / 127.5 - 1, atol=1e-6
    )
    train = [next(iter(dm.train_dataloader()))["label"] for _ in range(2)]
    assert train[0].shape == (8,) and torch.equal(train[0], train[1])  # seeded shuffling

    # a second run opens the cache: nothing is decoded again
    monkeypatch.setattr(pf, "decode_images", lambda *a, **k: pytest.fail("decoded twice"))
    again = module(tmp_path, input_kind="tokens")
    again.prepare_data()
    again.setup()
    tokens = next(iter(again.val_dataloader()))["input"]
    assert tokens.dtype == torch.long and tokens.min() >= 1 and tokens.max() <= 256

    pooled = module(tmp_path, pool=2, max_length=256)
    pooled.prepare_data()
    pooled.setup()
    small = next(iter(pooled.val_dataloader()))["input"]
    pixels = pf.decode_png(first.path, 32).astype(np.float64).reshape(16, 2, 16, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(small[0].numpy(), pixels.ravel() / 127.5 - 1, atol=1e-5)


def test_datamodule_synthetic_standin(tmp_path, caplog):
    dm = module(tmp_path, synthetic=True, synthetic_size=20, synthetic_style={"contour_length": 4})
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
    assert "STAND-IN DATA" in caplog.text and "NOT the benchmark" in caplog.text
    dm.setup()
    assert sum(len(v) for v in dm.splits.values()) == 20
    with pytest.raises(ValueError, match="synthetic_style"):
        module(tmp_path, synthetic=True, synthetic_style={"wiggle": 1}).prepare_data()


def test_datamodule_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="data.resolution=48"):
        module(tmp_path, resolution=48)
    with pytest.raises(ValueError, match="difficulty"):
        module(tmp_path, difficulty="medium")
    with pytest.raises(ValueError, match="data.max_length=16384"):
        module(tmp_path, resolution=128, max_length=1024)
    with pytest.raises(ValueError, match="data.pool=3"):
        module(tmp_path, pool=3)


def test_demo_preset_wires_data_facts_into_the_model(make_cfg):
    # its training steps run in tests/test_train.py::test_every_experiment_runs_a_few_steps
    cfg = make_cfg("experiment=lra_pathfinder_demo")
    assert cfg.model.input_kind == "real" and cfg.model.max_positions == 256 and cfg.model.num_labels == 2
    assert cfg.data.synthetic and cfg.data.max_length == (cfg.data.resolution // cfg.data.pool) ** 2


def test_pathx_config_resolves(make_cfg):
    cfg = make_cfg("data=pathx")
    assert (cfg.data.resolution, cfg.data.max_length, cfg.model.max_positions) == (128, 16384, 16384)


def test_a_png_replaced_in_place_changes_the_cache_key(tmp_path):
    folder = write_release(tmp_path, {"0.npy": [line(0, i, i % 2) for i in range(4)]})
    dm = module(tmp_path, release_dir=str(folder))
    before = dm.cache_folder(folder)
    pixels = np.zeros((32, 32), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(folder / "imgs/0/sample_2.png")  # same name, other image
    assert dm.cache_folder(folder) != before
