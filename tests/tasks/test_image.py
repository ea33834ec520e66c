"""CIFAR-10 reader, greyscale conversions, split and stand-in, on tiny files written here."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data import image


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
    module = image.ImageDataModule(
        root_dir=str(tmp_path), hub_cache=str(tmp_path / "no_hub"), max_length=1024
    )
    with pytest.raises(FileNotFoundError, match="(?s)cifar-10-batches-py.*cifar-10-python.tar.gz.*HF hub"):
        module.prepare_data()
    (tmp_path / "cifar10").mkdir()  # a folder by a searched name, but empty
    with pytest.raises(FileNotFoundError, match="cifar10 holds neither"):
        module.prepare_data()


def test_standin_round_trips_in_released_layout(tmp_path):
    image.write_standin(tmp_path, train_size=50, test_size=20)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
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
    ref = torch.utils.data.random_split(
        range(50_000), [45_000, 5_000], generator=torch.Generator().manual_seed(42)
    )
    assert train.tolist() == list(ref[0].indices) and val.tolist() == list(ref[1].indices)


def _hf_table(images, labels):
    import datasets

    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=image.LABEL_NAMES)}
    )
    return datasets.Dataset.from_dict(
        {"img": [Image.fromarray(x) for x in images], "label": labels}, features
    )


def test_reads_hf_save_to_disk_and_hub_parquet(tmp_path):
    import datasets

    train = image.make_standin_images(12, 0)
    test = image.make_standin_images(6, 1)
    tables = datasets.DatasetDict({"train": _hf_table(*train), "test": _hf_table(*test)})
    tables.save_to_disk(str(tmp_path / "data" / "cifar10"))
    splits = image.read_cifar(tmp_path / "data" / "cifar10")
    assert np.array_equal(splits["train"][0], train[0]) and splits["test"][1].tolist() == test[1].tolist()

    snapshot = tmp_path / "hub" / "datasets--uoft-cs--cifar10" / "snapshots" / "abc" / "plain_text"
    snapshot.mkdir(parents=True)
    tables["train"].to_parquet(str(snapshot / "train-00000-of-00001.parquet"))
    tables["test"].to_parquet(str(snapshot / "test-00000-of-00001.parquet"))
    found = image.ImageDataModule(
        root_dir=str(tmp_path / "empty"), hub_cache=str(tmp_path / "hub")
    ).raw_folder()
    assert found == snapshot.parent
    splits = image.read_cifar(found)
    assert np.array_equal(splits["test"][0], test[0]) and splits["train"][1].tolist() == train[1].tolist()


def _module(root, **options):
    options = {"synthetic": True, "synthetic_sizes": (100, 30), "batch_size": 8, **options}
    module = image.ImageDataModule(root_dir=str(root), **options)
    module.prepare_data()
    module.setup()
    return module


def test_datamodule_batches(tmp_path):
    module = _module(tmp_path)
    assert {s: len(module.splits[s]) for s in ("train", "val", "test")} == {
        "train": 90,
        "val": 10,
        "test": 30,
    }
    batch = next(iter(module.val_dataloader()))
    assert set(batch) == {"input", "label"}  # nothing padded: no mask (Contract 1)
    assert batch["input"].shape == (8, 1024) and batch["input"].dtype == torch.float32
    train_images, train_labels = image.make_standin_images(100, 0)
    rows = module.splits["val"].indices[:8]
    grey = image.grey_pil(train_images[rows]).reshape(8, -1)
    torch.testing.assert_close(batch["input"], torch.from_numpy((grey / 255.0 - 0.48) / 0.24).float())
    assert batch["label"].tolist() == train_labels[rows].tolist()

    tokens = _module(tmp_path, input_kind="tokens", vocab_size=257)
    assert tokens.cache_folder(tokens.raw_folder()) == module.cache_folder(module.raw_folder())  # same cache
    batch = next(iter(tokens.val_dataloader()))
    assert batch["input"].dtype == torch.int64 and torch.equal(
        batch["input"], torch.from_numpy(grey).long() + 1
    )

    truncating = _module(tmp_path, greyscale="tf")
    assert truncating.cache_folder(truncating.raw_folder()) != module.cache_folder(module.raw_folder())
    with pytest.raises(ValueError, match="data.vocab_size"):
        image.ImageDataModule(root_dir=str(tmp_path), input_kind="tokens", vocab_size=256, max_length=1024)


def test_demo_preset_wires_data_facts_into_the_model(make_cfg):
    # its training steps run in tests/test_train.py::test_every_experiment_runs_a_few_steps
    cfg = make_cfg("experiment=lra_image_demo")
    assert cfg.model.input_kind == "real" and cfg.model.max_positions == 1024 and cfg.model.num_labels == 10
    assert cfg.data.synthetic and 1024 % cfg.model.chunk_size == 0
