"""Speech Commands SC10 reader, splits and statistics, on a tiny v0.02 tree written here."""

import logging
import wave

import numpy as np
import pytest
import torch

from tasks.data import speech


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc")
    speech.write_standin(root, clips_per_word=12)
    return root


def _frames(path):
    with wave.open(str(path)) as f:
        return f.getnframes()


def test_reader_keeps_only_one_second_clips(tree, caplog):
    expected = {
        w: sorted(p.name for p in (tree / w).glob("*.wav") if _frames(p) == 16000) for w in speech.SC10_WORDS
    }
    short = sum(1 for w in speech.SC10_WORDS for p in (tree / w).glob("*.wav") if _frames(p) != 16000)
    assert short > 0  # the stand-in has short clips, so the drop rule is exercised
    with caplog.at_level(logging.INFO, logger="tasks.data.speech"):
        clips, labels, names = speech.read_sc10(tree)
    assert f"dropped {short} shorter" in caplog.text
    assert clips.dtype == np.int16 and clips.shape == (len(names), 16000)
    assert names == [f"{w}/{n}" for w in speech.SC10_WORDS for n in expected[w]]  # label order, then sorted
    assert labels.tolist() == [speech.SC10_WORDS.index(n.split("/")[0]) for n in names]
    first = tree / names[0]
    with wave.open(str(first)) as f:
        assert np.array_equal(clips[0], np.frombuffer(f.readframes(16000), "<i2"))


@pytest.mark.parametrize(
    "layout", ["speech_commands_v0.02", "SpeechCommands", "SpeechCommands/speech_commands_v0.02"]
)
def test_finds_every_layout(tmp_path, layout):
    root = tmp_path / layout
    for word in speech.SC10_WORDS:
        (root / word).mkdir(parents=True)
    assert speech.SpeechDataModule(root_dir=str(tmp_path), max_length=16000).raw_folder() == root


def test_missing_tree_names_paths(tmp_path):
    module = speech.SpeechDataModule(root_dir=str(tmp_path), max_length=16000)
    with pytest.raises(FileNotFoundError, match="(?s)speech_commands_v0.02.*speech_commands_v0.02.tar.gz"):
        module.raw_folder()
    (tmp_path / "SpeechCommands" / "yes").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="SpeechCommands has no word folder no, up"):
        module.raw_folder()


def _wav(path, channels=1, width=2, rate=16000):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(b"\x00" * (width * channels * 100))
    return path


@pytest.mark.parametrize(
    "kwargs, message",
    [({"channels": 2}, "2 channels"), ({"width": 1}, "PCM_U8"), ({"rate": 8000}, "8000 Hz")],
)
def test_bad_wav_names_the_file(tmp_path, kwargs, message):
    path = _wav(tmp_path / "bad_clip.wav", **kwargs)
    with pytest.raises(ValueError, match=f"bad_clip.wav.*{message}"):
        speech.read_wav(path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000")
    with pytest.raises(ValueError, match="broken.wav"):
        speech.read_wav(tmp_path / "broken.wav")


def test_stratified_split_sizes_and_classes():
    labels = np.repeat(np.arange(10), [3600, 3500, 3450, 3500, 3480, 3500, 3480, 3500, 3465, 3500])
    assert len(labels) == 34_975  # the SC10 clip count of S4/MEGA
    split = speech.split_stratified(labels)
    assert [len(split[s]) for s in ("train", "val", "test")] == [24_482, 5_246, 5_247]
    assert len(np.unique(np.concatenate(list(split.values())))) == 34_975
    for part, share in (("train", 0.7), ("val", 0.15)):
        counts = np.bincount(labels[split[part]], minlength=10)
        assert (
            np.abs(counts - share * np.bincount(labels)).max() <= 1
        )  # stratified: every class in proportion
    again = speech.split_stratified(labels)
    assert all(np.array_equal(split[s], again[s]) for s in split)


def test_official_split_follows_list_files(tree):
    _, _, names = speech.read_sc10(tree)
    split = speech.split_official(tree, names)
    listed = {s: set((tree / f).read_text().split()) for s, f in speech.LIST_FILES.items()}
    assert len(split["val"]) > 0 and len(split["test"]) > 0
    for part in ("val", "test"):
        assert {names[i] for i in split[part]} == listed[part] & set(names)
    assert not {names[i] for i in split["train"]} & (listed["val"] | listed["test"])


def test_statistics_per_step_and_global():
    clips = np.random.default_rng(0).integers(-3000, 3000, (50, 16000)).astype(np.int16)
    scaled = clips / 32768.0
    mean, std = speech.training_statistics(clips, per_step=True, chunk=16)
    np.testing.assert_allclose(mean, scaled.mean(0), atol=1e-7)
    np.testing.assert_allclose(std, scaled.std(0), rtol=1e-4)
    mean, std = speech.training_statistics(clips, per_step=False)
    np.testing.assert_allclose([mean.item(), std.item()], [scaled.mean(), scaled.std()], rtol=1e-4)


def _module(root, **options):
    module = speech.SpeechDataModule(
        root_dir=str(root), synthetic=True, synthetic_clips_per_word=12, batch_size=4, **options
    )
    module.prepare_data()
    module.setup()
    return module


def test_datamodule_normalises_with_training_statistics(tmp_path):
    module = _module(tmp_path)
    clips, labels, _ = speech.read_sc10(module.raw_folder())
    split = speech.split_stratified(labels)
    assert {s: len(module.splits[s]) for s in split} == {s: len(v) for s, v in split.items()}
    train = clips[split["train"]] / 32768.0
    batch = next(iter(module.test_dataloader()))
    assert set(batch) == {"input", "label"} and batch["input"].shape == (4, 16000)
    rows = split["test"][:4]
    expected = (clips[rows] / 32768.0 - train.mean(0)) / (train.std(0) + 1e-5)
    torch.testing.assert_close(batch["input"], torch.from_numpy(expected).float(), rtol=1e-4, atol=1e-4)
    assert batch["label"].tolist() == labels[rows].tolist()

    coarse = _module(tmp_path, normalisation="global", split="official", resolution=4, max_length=4000)
    assert len(coarse.splits["test"]) == len(
        speech.split_official(coarse.raw_folder(), speech.read_sc10(coarse.raw_folder())[2])["test"]
    )
    batch = next(iter(coarse.train_dataloader()))
    assert batch["input"].shape == (4, 4000)
    with pytest.raises(ValueError, match="data.max_length=4000"):
        speech.SpeechDataModule(root_dir=str(tmp_path), max_length=16000, resolution=4)


def test_demo_preset_wires_data_facts_into_the_model(make_cfg):
    # its training steps run in tests/test_train.py::test_every_experiment_runs_a_few_steps
    cfg = make_cfg("experiment=sc_raw_demo")
    assert cfg.model.input_kind == "real" and cfg.model.max_positions == 2000 and cfg.model.num_labels == 10
    assert cfg.data.synthetic and cfg.data.resolution == 8 and 2000 % cfg.model.chunk_size == 0


def test_a_wav_replaced_in_place_changes_the_cache_key(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    speech.write_standin(root, clips_per_word=3)
    module = speech.SpeechDataModule(root_dir=str(tmp_path))
    before = module.cache_folder(root)
    clip = sorted((root / "yes").glob("*.wav"))[0]
    speech._write_wav(clip, np.zeros(speech.CLIP_SAMPLES - 1, dtype=np.int16))  # same name, other clip
    assert module.cache_folder(root) != before
