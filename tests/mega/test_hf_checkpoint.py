"""Loading a Hugging Face MEGA checkpoint folder without `transformers`."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega  # noqa: E402
from mega.hf import load_pretrained  # noqa: E402
from tests.mega.hf_lm_models import SMALL, decoder_options, hf_model  # noqa: E402


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize(
    "cls_name, options, our_cls",
    [
        ("MegaForCausalLM", decoder_options(relative_positional_bias="simple"), "MegaForCausalLM"),
        (
            "MegaForCausalLM",
            decoder_options(tie_word_embeddings=False, add_cross_attention=True),
            "MegaForCausalLM",
        ),
        (
            "MegaForMaskedLM",
            dict(use_chunking=True, chunk_size=4, relative_positional_bias="simple"),
            "MegaForMaskedLM",
        ),
    ],
)
def test_checkpoint_folder_loads_and_matches(tmp_path, safe, cls_name, options, our_cls):
    reference = hf_model(cls_name, **options)
    reference.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    ours = load_pretrained(tmp_path)
    assert type(ours) is getattr(mega, our_cls)
    assert not ours.training
    ids = torch.randint(3, SMALL["vocab_size"], (2, 8))
    kwargs = {}
    if options.get("add_cross_attention"):
        kwargs["encoder_hidden_states"] = torch.randn(2, 5, SMALL["hidden_size"])
    expected = reference(ids, **kwargs).logits
    assert (ours(ids, **kwargs).logits - expected).abs().max() <= 1e-5


def test_sharded_checkpoint_folder_loads(tmp_path):
    reference = hf_model("MegaForCausalLM", **decoder_options(relative_positional_bias="simple"))
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ids = torch.randint(3, SMALL["vocab_size"], (2, 8))
    assert (load_pretrained(tmp_path)(ids).logits - reference(ids).logits).abs().max() <= 1e-5


def test_checkpoint_folder_of_base_model_loads_encoder(tmp_path):
    reference = hf_model("MegaModel", relative_positional_bias="simple")
    reference.save_pretrained(tmp_path)
    encoder = load_pretrained(tmp_path)
    assert isinstance(encoder, mega.MegaEncoder)
    ids = torch.randint(3, SMALL["vocab_size"], (2, 8))
    assert (encoder(ids) - reference(ids).last_hidden_state).abs().max() <= 1e-5


def test_checkpoint_with_missing_and_unexpected_keys_lists_them(tmp_path):
    from safetensors.torch import load_file, save_file

    reference = hf_model("MegaForCausalLM", **decoder_options())
    reference.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("mega.layers.1.nffn.fc1.weight")
    state["mega.layers.1.surprise"] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_pretrained(tmp_path)
    message = str(error.value)
    assert "encoder.layers.1.ffn.fc1.weight" in message and "mega.layers.1.surprise" in message
    assert "model.safetensors" in message


def test_checkpoint_that_is_not_mega_fails_clearly(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="not a MEGA checkpoint"):
        load_pretrained(tmp_path)


def test_folder_without_weights_or_config_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)
    hf_model("MegaForMaskedLM").config.to_json_file(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_pretrained(tmp_path)


def test_lm_encoder_initialises_a_classifier(tmp_path):
    import dataclasses

    reference = hf_model("MegaForMaskedLM", relative_positional_bias="simple")
    reference.save_pretrained(tmp_path)
    lm = load_pretrained(tmp_path)
    config = dataclasses.replace(lm.config, num_labels=3, tie_word_embeddings=False)
    classifier = mega.MegaForSequenceClassification(config=config).eval()
    classifier.encoder.load_state_dict(lm.encoder.state_dict())
    ids = torch.randint(3, SMALL["vocab_size"], (2, 8))
    assert (classifier.encoder(ids) - reference.mega(ids).last_hidden_state).abs().max() <= 1e-5
    assert classifier(ids).shape == (2, 3)
