"""MegaForSequenceClassification: the LRA classifier built from flat MegaConfig options (Contract 2)."""

from __future__ import annotations

from mega.config import MegaConfig
from mega.encoder import MegaEncoder
from mega.heads import SequenceClassifier, head_arguments, resolve_config


class MegaForSequenceClassification(SequenceClassifier):
    """net = MegaForSequenceClassification(**options); logits = net(input, mask, input2=None, mask2=None)."""

    config_class = MegaConfig  # what its options are (train.py checks their types before building)

    def __init__(self, config: MegaConfig | None = None, **options) -> None:
        config = resolve_config(MegaConfig, config, options)
        super().__init__(MegaEncoder(config), **head_arguments(config))
        self.config = config
