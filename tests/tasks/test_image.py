"""CIFAR-10 reader, greyscale conversions, split and stand-in, on tiny files written here."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tasks import image


def _write_batch(path, data, labels, byte_keys=True):
    content = {"data": data, "labels": list(labels), "batch_label": "test batch"}
    if byte_keys:
        content = {k.encode(): v for k, v in content.items()}
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)


@pytest.mark.parametrize("byte_keys", [True, False])
def test_batch_rows_are_rgb_planes(tmp_path, byte_keys):
    # one image whose R plane is 0..255 row-major (cycled), G = 7, B = 200
    plane = np.arange(1024) % 256
    row = np.concatenate([plane, np.full(1024, 7), np.full(1024, 200)]).astype(np.uint8)
    _write_batch(tmp_path / "b", row[None], [3], byte_keys)
    images, labels = image.read_cifar_batch(tmp_path / "b")
    assert images.shape == (1, 32, 32, 3) and labels.tolist() == [3]
    assert images[0, 1, 2, 0] == (32 + 2) % 256  # pixel (row 1, col 2) of the R plane
    assert (images[0, ..., 1] == 7).all() and (images[0, ..., 2] == 200).all()


def test_bad_pickles_name_the_file(tmp_path):
    with open(tmp_path / "no_labels", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match="no_labels.*no labels key"):
        image.read_cifar_batch(tmp_path / "no_labels")
    (tmp_path / "garbage").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="garbage"):
        image.read_cifar_batch(tmp_path / "garbage")
    _write_batch(tmp_path / "short_rows", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="short_rows.*3072"):
        image.read_cifar_batch(tmp_path / "short_rows")


def test_missing_data_lists_the_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*cifar-10-python.tar.gz"):
        image.read_cifar(tmp_path, hub_cache=tmp_path / "no_hub")


def test_standin_round_trips_in_released_layout(tmp_path):
    folder = image.write_standin(tmp_path, train_size=50, test_size=20)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*image.TRAIN_BATCHES, image.TEST_BATCH, "batches.meta"]
    )
    splits = image.read_cifar(tmp_path)
    expected = image.make_standin_images(50, 0)
    assert np.array_equal(splits["train"][0], expected[0]) and np.array_equal(splits["train"][1], expected[1])
    assert splits["test"][0].shape == (20, 32, 32, 3)


def test_grey_pil_matches_pillow():
    rgb = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    pillow = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in rgb])
    assert np.array_equal(image.grey_pil(rgb), pillow)


def test_grey_tf_truncates():
    # pure green: PIL rounds 0.587·255 = 149.685 to 150; TF takes floor(0.5870·255/255·255.5) = floor(149.98) = 149
    green = np.array([[[0, 255, 0]]], np.uint8)
    assert image.grey_pil(green).item() == 150 and image.grey_tf(green).item() == 149
    rgb = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert np.abs(image.grey_tf(rgb).astype(int) - image.grey_pil(rgb).astype(int)).max() <= 1
    with pytest.raises(ValueError, match="data.greyscale"):
        image.to_sequences(rgb, "luma")


def test_split_is_torch_random_split_seed_42():
    train, val = image.split_train_val(50_000, 5_000, seed=42)
    assert len(train) == 45_000 and len(val) == 5_000
    assert len(np.union1d(train, val)) == 50_000
    ref = torch.utils.data.random_split(range(50_000), [45_000, 5_000], generator=torch.Generator().manual_seed(42))
    assert train.tolist() == list(ref[0].indices) and val.tolist() == list(ref[1].indices)


def _hf_table(images, labels):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=image.LABEL_NAMES)})
    return datasets.Dataset.from_dict({"img": [Image.fromarray(x) for x in images], "label": labels}, features)


def test_reads_hf_save_to_disk_and_hub_parquet(tmp_path):
    import datasets

    train = image.make_standin_images(12, 0)
    test = image.make_standin_images(6, 1)
    tables = datasets.DatasetDict({"train": _hf_table(*train), "test": _hf_table(*test)})
    tables.save_to_disk(str(tmp_path / "data" / "cifar10"))
    splits = image.read_cifar(tmp_path / "data", hub_cache=tmp_path / "no_hub")
    assert np.array_equal(splits["train"][0], train[0]) and splits["test"][1].tolist() == test[1].tolist()

    snapshot = tmp_path / "hub" / "datasets--uoft-cs--cifar10" / "snapshots" / "abc" / "plain_text"
    snapshot.mkdir(parents=True)
    tables["train"].to_parquet(str(snapshot / "train-00000-of-00001.parquet"))
    tables["test"].to_parquet(str(snapshot / "test-00000-of-00001.parquet"))
    splits = image.read_cifar(tmp_path / "empty", hub_cache=tmp_path / "hub")
    assert np.array_equal(splits["test"][0], test[0]) and splits["train"][1].tolist() == train[1].tolist()
