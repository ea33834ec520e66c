"""Language-model heads: a causal LM with incremental decoding and generate(), and a masked LM (as HF's port)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mega.cache import DecoderCache
from mega.config import MegaConfig
from mega.encoder import EncoderOutput, MegaEncoder

IGNORE_INDEX = -100  # label value that takes no part in the loss (HF, PyTorch default)


@dataclass
class LMOutput:
    logits: torch.Tensor  # [B, L, vocab_size]
    loss: torch.Tensor | None = None  # mean cross-entropy over labels != -100
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, then each layer's output
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer [B, K, C, C]
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # per layer [B, L, S]


class LMHead(nn.Module):
    """logits = W_out tanh(W x + b) + b_out  (the dense + tanh only with add_lm_hidden_dense_layer, as HF).

    With tie_word_embeddings, W_out is the token embedding matrix itself.
    """

    def __init__(self, config: MegaConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        dim = config.hidden_size
        self.dense = nn.Linear(dim, dim) if config.add_lm_hidden_dense_layer else None
        self.out = nn.Linear(dim, config.vocab_size)
        for linear in (self.dense, self.out):
            if linear is not None:
                nn.init.normal_(linear.weight, std=config.initializer_range)
                nn.init.zeros_(linear.bias)
        if config.tie_word_embeddings:
            self.out.weight = embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            hidden = torch.tanh(self.dense(hidden))
        return self.out(hidden)


class _LanguageModel(nn.Module):
    """An encoder and an LM head built from a MegaConfig or flat options (Contract 2 style)."""

    config_class = MegaConfig  # what its options are (train.py checks their types before building)

    def __init__(self, config: MegaConfig | None = None, **options) -> None:
        super().__init__()
        if config is None:
            config = MegaConfig(**options)
        elif options:
            raise ValueError(f"pass either a MegaConfig or options, not both (got options {sorted(options)})")
        if config.input_kind != "tokens":
            raise ValueError(
                f"{type(self).__name__} predicts tokens: it needs input_kind='tokens', "
                f"got {config.input_kind!r}"
            )
        self.config = config
        self.encoder = MegaEncoder(config)
        self.head = LMHead(config, self.encoder.embed.tokens)

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        **extras,
    ) -> tuple[torch.Tensor, EncoderOutput | None]:
        out = self.encoder(input_ids, attention_mask, token_type_ids, **extras)
        if isinstance(out, EncoderOutput):
            return self.head(out.last_hidden_state), out
        return self.head(out), None

    def param_counts(self) -> dict[str, int]:
        """Unique parameters (a tied output matrix counts once, as part of the embedding)."""
        return {
            "total": sum(p.numel() for p in self.parameters()),
            "embedding": self.encoder.embedding_parameters(),
        }


def _output(logits: torch.Tensor, loss: torch.Tensor | None, states: EncoderOutput | None) -> LMOutput:
    if states is None:
        return LMOutput(logits, loss)
    return LMOutput(logits, loss, states.hidden_states, states.attentions, states.cross_attentions)


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal-LM logits [B, L, V] and labels [B, L] aligned: position t predicts labels[t + 1]."""
    return logits[:, :-1], labels[:, 1:]


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


class MegaForCausalLM(_LanguageModel):
    """Next-token prediction with causal attention and the causal EMA (bidirectional=False, is_decoder=True).

    lm = MegaForCausalLM(**options)
    out = lm(input_ids, labels=input_ids)              # loss of predicting token t+1 from tokens ≤ t
    cache = DecoderCache(); lm(prompt, cache=cache); lm(next_token, cache=cache)   # incremental decoding
    tokens = lm.generate(prompt, max_new_tokens=50, do_sample=True, temperature=0.8, top_k=40)
    """

    def __init__(self, config: MegaConfig | None = None, **options) -> None:
        if config is None:
            options = {"is_decoder": True, "bidirectional": False, **options}
        super().__init__(config, **options)
        if self.config.bidirectional:
            raise ValueError(
                "MegaForCausalLM needs bidirectional=False: a bidirectional EMA reads future tokens, "
                "so next-token prediction would see its targets"
            )
        if not self.config.is_decoder:
            raise ValueError(
                "MegaForCausalLM needs is_decoder=True: without the causal mask every position "
                "attends to future tokens"
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        cache: DecoderCache | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> LMOutput:
        """input_ids [B, L]; labels [B, L] (-100 = ignored; shifted inside: position t predicts labels[t+1]).

        With a cache, input_ids (and attention_mask) are only the new tokens; they continue the cached sequence.
        """
        if cache is not None:
            self._check_cache(cache, input_ids.size(1), output_attentions)
        logits, states = self.run(
            input_ids,
            attention_mask,
            token_type_ids,
            cache=cache,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        loss = None
        if labels is not None:
            loss = _cross_entropy(*shift_for_next_token(logits, labels))
        return _output(logits, loss, states)

    def _check_cache(self, cache: DecoderCache, new_tokens: int, output_attentions: bool) -> None:
        if output_attentions:
            raise ValueError(
                "output_attentions is not available with a cache: run the full sequence without "
                "one to get the attention weights"
            )
        truncation = self.config.truncation
        if truncation is not None and cache.length + new_tokens > truncation:
            raise ValueError(
                f"truncation={truncation}: the convolution sees only {truncation} past tokens but "
                "the recurrent EMA of incremental decoding sees all of them, so they differ beyond "
                f"position {truncation} (the cache would reach {cache.length + new_tokens}); "
                "decode without a cache, or use a model with truncation=None"
            )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Prompt [B, L] (no padding) → [B, L + new] by greedy decoding or sampling, one cached step per token.

        Sampling draws from softmax(logits / temperature) restricted to the top_k tokens. After eos_token_id a
        sequence keeps emitting eos_token_id; generation stops early when every sequence has ended.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
        if do_sample and temperature <= 0:
            raise ValueError(
                f"temperature={temperature} must be > 0 when sampling (use do_sample=False for greedy)"
            )
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1 or None")
        was_training = self.training
        self.eval()
        cache, tokens = DecoderCache(), [input_ids]
        finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
        step_input = input_ids
        for _ in range(max_new_tokens):
            logits = self(
                step_input,
                cache=cache,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
            ).logits[:, -1]
            step_input = next_token(logits, do_sample, temperature, top_k, generator).unsqueeze(1)
            if eos_token_id is not None:
                step_input = step_input.masked_fill(finished.unsqueeze(1), eos_token_id)
                finished |= step_input.squeeze(1) == eos_token_id
            tokens.append(step_input)
            if bool(finished.all()):
                break
        self.train(was_training)
        return torch.cat(tokens, dim=1)


def next_token(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[B, V] logits → [B] token ids: the argmax, or a draw from softmax(logits / T) over the top-k tokens."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


class MegaForMaskedLM(_LanguageModel):
    """Masked-token prediction (usually bidirectional): logits at every position, loss where labels != -100."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> LMOutput:
        logits, states = self.run(
            input_ids,
            attention_mask,
            token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        loss = None if labels is None else _cross_entropy(logits, labels)
        return _output(logits, loss, states)
