"""Small (Hugging Face) MEGA models with weights at a scale where every path matters, and cached decoding."""

import torch

from mega.cache import DecoderCache

TOL = 1e-5
SMALL = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=24,
    ema_projection_size=4,
    shared_representation_size=8,
    nffn_hidden_size=20,
    max_positions=32,
)


def hf_model(cls_name: str, seed: int = 0, **options):
    """A small HF model in eval mode with all weights redrawn at a scale where every path matters."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.MegaConfig(**{**SMALL, **options})
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


def decoder_options(**options):
    return dict(is_decoder=True, bidirectional=False, **options)


def incremental_logits(model, ids, blocks, **kwargs):
    """Feed `ids` in consecutive blocks of the given sizes through one cache; concatenate the logits."""
    cache, logits, start = DecoderCache(), [], 0
    for size in blocks:
        logits.append(model(ids[:, start : start + size], cache=cache, **kwargs).logits)
        start += size
    assert start == ids.shape[1] == cache.length
    return torch.cat(logits, dim=1)
