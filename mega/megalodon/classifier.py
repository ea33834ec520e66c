"""MegalodonForSequenceClassification: the LRA classifier built from flat MegalodonConfig options (Contract 2)."""

from __future__ import annotations

from mega.heads import SequenceClassifier, head_arguments, resolve_config
from mega.megalodon.config import MegalodonConfig
from mega.megalodon.encoder import MegalodonEncoder


class MegalodonForSequenceClassification(SequenceClassifier):
    """net = MegalodonForSequenceClassification(**options); logits = net(input, mask, input2=None, mask2=None)."""

    config_class = MegalodonConfig  # what its options are (train.py checks their types before building)

    def __init__(self, config: MegalodonConfig | None = None, **options) -> None:
        config = resolve_config(MegalodonConfig, config, options)
        super().__init__(MegalodonEncoder(config), **head_arguments(config))
        self.config = config
