"""Byte-level text datamodule, the LM training module and experiment=lm_demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
from mega.lm import IGNORE_INDEX
from tasks.data.text_file import TextFileDataModule
from tasks.data.tokenizers import decode, encode
from tests.test_train import shrink


def text_module(tmp_path: Path, text: str, **kwargs) -> TextFileDataModule:
    (tmp_path / "a.txt").write_text(text)
    options = {
        "files": ["*.txt"],
        "base_dir": str(tmp_path),
        "root_dir": str(tmp_path / "data"),
        "seq_len": 8,
        "vocab_size": 257,
        "num_classes": 257,
        "batch_size": 4,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        **kwargs,
    }
    module = TextFileDataModule(**options)
    module.prepare_data()
    module.setup()
    return module


def test_bytes_round_trip_and_padding_is_dropped():
    text = "Mega — ∑ ok\n"
    assert decode(encode(text) + [0, 0]) == text
    assert min(encode(text)) >= 1 and max(encode(bytes([255]))) == 256


def test_blocks_cover_every_next_token_pair_once(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(100))
    module = text_module(tmp_path, text)
    ids = encode(text)
    starts = {"train": 0, "val": 60, "test": 80}  # 60 % / 20 % / 20 %, contiguous
    for split, start in starts.items():
        blocks = [row["input"].tolist() for row in module.splits[split]]
        assert all(len(b) <= 8 for b in blocks)
        pairs = [(b[i], b[i + 1]) for b in blocks for i in range(len(b) - 1)]
        end = start + sum(len(b) - 1 for b in blocks) + 1
        assert pairs == list(zip(ids[start : end - 1], ids[start + 1 : end]))
    assert end == len(ids)
    batch = next(iter(module.test_dataloader()))
    assert batch["input"].shape[1] == 8 and "mask" in batch  # the last block is short
    assert torch.equal(batch["label"] == IGNORE_INDEX, ~batch["mask"])


def test_bad_text_options_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.files: '\*.md' matches no file"):
        text_module(tmp_path, "hello world", files=["*.md"])
    with pytest.raises(ValueError, match="the val split has"):
        text_module(tmp_path, "tiny", val_fraction=0.01, test_fraction=0.01)
    with pytest.raises(ValueError, match="val_fraction"):
        text_module(tmp_path, "hello", val_fraction=0.6, test_fraction=0.5)


def test_lm_demo_trains_reports_perplexity_and_samples(make_cfg):
    cfg = shrink(
        make_cfg("experiment=lm_demo", "trainer.max_steps=3", "data.seq_len=32", "module.sample_tokens=12")
    )
    train.main(cfg)
    run_dir = Path(cfg.paths.output_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 3 and 1.0 < results["test/ppl"] < 257 * 2
    samples = (run_dir / "samples.txt").read_text()
    assert samples.count("--- sample") == len(cfg.module.sample_prompts)
    assert "prompt 'MEGA '" in samples
