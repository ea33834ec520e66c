"""Megalodon (Ma et al. 2024, arXiv 2404.08801), MEGA's successor, in plain PyTorch on MEGA's parts."""

from mega.megalodon.classifier import MegalodonForSequenceClassification
from mega.megalodon.config import CODE_VARIANT, MegalodonConfig
from mega.megalodon.encoder import MegalodonEncoder

__all__ = ["CODE_VARIANT", "MegalodonConfig", "MegalodonEncoder", "MegalodonForSequenceClassification"]
