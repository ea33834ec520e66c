"""MegaForSequenceClassification: the LRA classifier built from flat MegaConfig options (Contract 2)."""

from __future__ import annotations

from mega.config import MegaConfig
from mega.encoder import MegaEncoder
from mega.heads import SequenceClassifier


class MegaForSequenceClassification(SequenceClassifier):
    """net = MegaForSequenceClassification(**options); logits = net(input, mask, input2=None, mask2=None)."""

    config_class = MegaConfig  # what its options are (train.py checks their types before building)

    def __init__(self, config: MegaConfig | None = None, **options) -> None:
        if config is None:
            config = MegaConfig(**options)
        elif options:
            raise ValueError(f"pass either a MegaConfig or options, not both (got options {sorted(options)})")
        super().__init__(
            MegaEncoder(config),
            config.hidden_size,
            config.intermediate_size,
            config.num_labels,
            config.pooling,
            config.dual_encoder,
            config.pair_combine,
            config.head_dropout,
        )
        self.config = config
