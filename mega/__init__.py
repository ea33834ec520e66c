"""MEGA (Moving Average Equipped Gated Attention) and its successor Megalodon in plain PyTorch."""

from mega.cache import DecoderCache
from mega.classifier import MegaForSequenceClassification
from mega.config import MegaConfig
from mega.encoder import MegaEncoder
from mega.heads import ClassifierHead, SequenceClassifier, combine_pair, pool
from mega.hf import from_transformers, load_pretrained
from mega.lm import LMOutput, MegaForCausalLM, MegaForMaskedLM
from mega.megalodon import MegalodonConfig, MegalodonEncoder, MegalodonForSequenceClassification
from mega.transformer import TransformerConfig, TransformerForSequenceClassification

__all__ = [
    "ClassifierHead",
    "DecoderCache",
    "LMOutput",
    "MegaConfig",
    "MegaEncoder",
    "MegaForCausalLM",
    "MegaForMaskedLM",
    "MegaForSequenceClassification",
    "MegalodonConfig",
    "MegalodonEncoder",
    "MegalodonForSequenceClassification",
    "SequenceClassifier",
    "TransformerConfig",
    "TransformerForSequenceClassification",
    "combine_pair",
    "from_transformers",
    "load_pretrained",
    "pool",
]
