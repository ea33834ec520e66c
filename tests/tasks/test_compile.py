"""`module.compile`: the compiled net computes what the eager one does, and checkpoints move freely between them.

Inductor (C++ code generation with gcc) takes about a minute to compile even a tiny MEGA on a cold cache, so the
inductor comparison is `slow`; the fast tests compile with the `aot_eager` backend, which runs the same Dynamo
capture and AOT autograd tracing (through our custom autograd functions) without generating code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mega
from tests.test_train import run, weights

OPTIONS = dict(
    vocab_size=20,
    pad_token_id=0,
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=16,
    shared_representation_size=8,
    nffn_hidden_size=16,
    ema_projection_size=2,
    max_positions=64,
    num_labels=3,
    chunk_size=8,
)
NO_DROPOUT = dict(
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
)


def step(net: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, OPTIONS["vocab_size"], (4, 20), generator=generator)
    mask = torch.ones(4, 20, dtype=torch.bool)
    mask[2, 11:] = False
    torch.manual_seed(2)
    loss = F.cross_entropy(net(ids, mask=mask), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    return loss.detach(), [p.grad for p in net.parameters()]


def compare_compiled_with_eager(backend: str, options: dict) -> None:
    torch.manual_seed(0)
    eager = mega.MegaForSequenceClassification(**options).train()
    compiled = mega.MegaForSequenceClassification(**options).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(backend=backend)
    (eager_loss, eager_grads), (loss, grads) = step(eager), step(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for got, expected in zip(grads, eager_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


# without dropout: compiled graphs drop with F.dropout (which inductor fuses), not with the CPU masks of eager
def test_aot_eager_matches_eager():
    compare_compiled_with_eager("aot_eager", {**OPTIONS, **NO_DROPOUT})


@pytest.mark.slow
def test_inductor_matches_eager():
    compare_compiled_with_eager("inductor", {**OPTIONS, **NO_DROPOUT})


COMPILED = "module.compile={backend:aot_eager}"


# compiled → eager in `make test` (the compiled run also tests its best checkpoint); the other way round is slow
@pytest.mark.parametrize(
    "first, second",
    [
        (COMPILED, "module.compile=false"),
        pytest.param("module.compile=false", COMPILED, marks=pytest.mark.slow),
    ],
)
def test_checkpoints_move_between_compiled_and_eager_runs(make_cfg, first: str, second: str):
    common = ["experiment=lra_listops_demo", "callbacks.periodic_checkpoint.every_n_train_steps=2"]
    results = run(make_cfg(*common, first, "trainer.max_steps=2", run="first"))
    assert results["best_checkpoint"] and results["test/acc"] is not None  # tested the best checkpoint
    run_dir = Path(results["run_dir"])
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        assert not any("_orig_mod" in name for name in weights(checkpoint)), checkpoint
    resumed = run(make_cfg(*common, second, "trainer.max_steps=4", f"ckpt_path={run_dir}", run="first"))
    assert resumed["steps"] == 4 and resumed["test/acc"] is not None
    assert not any("_orig_mod" in name for name in weights(run_dir / "checkpoints" / "last.ckpt"))
