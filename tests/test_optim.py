"""fairseq's Adam (FairseqAdam) against a loop written from fairseq's update rule, its resume, its decay groups."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn

from tasks.training.classifier import ClassificationModule
from tasks.training.optim import FairseqAdam

LR, BETAS, EPS = 1e-3, (0.9, 0.98), 1e-8
STEPS = 50


class FairseqReference:
    """fairseq's `Adam.step` (fairseq/optim/adam.py) written out per parameter, as a plain loop:
    m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g², p <- p - lr·wd·p - lr·sqrt(1-b2^t)/(1-b1^t) · m/(sqrt(v) + eps),
    with t counting the updates of that parameter (a parameter without gradient is skipped)."""

    def __init__(self, groups: list[dict]) -> None:
        self.groups = groups
        self.state: dict[int, dict] = {}

    def step(self) -> None:
        b1, b2 = BETAS
        for group in self.groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                s = self.state.setdefault(id(p), {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
                s["t"] += 1
                s["m"] = b1 * s["m"] + (1 - b1) * p.grad
                s["v"] = b2 * s["v"] + (1 - b2) * p.grad * p.grad
                step_size = LR * math.sqrt(1 - b2 ** s["t"]) / (1 - b1 ** s["t"])
                with torch.no_grad():
                    p -= group["weight_decay"] * LR * p
                    p -= step_size * s["m"] / (s["v"].sqrt() + EPS)


def toy_model() -> nn.ModuleDict:
    """Float64 toy classifier with a second head used on even updates only (its update count lags)."""
    torch.manual_seed(0)
    return nn.ModuleDict(
        {"body": nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)), "extra": nn.Linear(6, 3)}
    ).double()


def groups_of(model: nn.ModuleDict) -> list[dict]:
    return [
        {"params": list(model["body"].parameters()), "weight_decay": 0.01},
        {"params": list(model["extra"].parameters()), "weight_decay": 0.0},
    ]


def train(model: nn.ModuleDict, step: Callable[[], None], updates: range) -> None:
    """Gradients of 1e-6 × cross-entropy: sqrt(v) comes near eps, where its placement matters (as in MEGA)."""
    for t in updates:
        data = torch.Generator().manual_seed(t)
        x = torch.randn(16, 6, generator=data, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=data)
        for p in model.parameters():
            p.grad = None
        logits = model["body"](x) + (model["extra"](x) if t % 2 == 0 else 0)
        (1e-6 * nn.functional.cross_entropy(logits, y)).backward()
        step()


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def fairseq_run() -> torch.Tensor:
    model = toy_model()
    train(model, FairseqReference(groups_of(model)).step, range(STEPS))
    return flat(model)


@pytest.mark.parametrize("kernel", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_fairseq_adam_equals_fairseq_update_rule(kernel: dict) -> None:
    expected, start = fairseq_run(), flat(toy_model())
    model = toy_model()
    optimizer = FairseqAdam(groups_of(model), lr=LR, betas=BETAS, eps=EPS, **kernel)
    train(model, optimizer.step, range(STEPS))
    assert (flat(model) - expected).abs().max() <= 1e-12
    assert [g["eps"] for g in optimizer.param_groups] == [EPS, EPS]  # the configured value, outside step()
    # torch's AdamW (eps after the bias correction) is measurably elsewhere: the comparison can fail
    model = toy_model()
    train(model, torch.optim.AdamW(groups_of(model), lr=LR, betas=BETAS, eps=EPS).step, range(STEPS))
    assert (flat(model) - expected).abs().max() > 1e-3 * (expected - start).abs().max()


def test_closure_gives_the_gradients_and_the_loss() -> None:
    weight = nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer = FairseqAdam([weight], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)

    def closure() -> torch.Tensor:
        loss = (weight * torch.arange(3.0, dtype=torch.float64)).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 3.0 and optimizer.state[weight]["updates"] == 1
    assert weight[0].item() == 1.0 and weight[2].item() == pytest.approx(1.0 - LR)


def test_resume_mid_way_equals_uninterrupted() -> None:
    straight = toy_model()
    optimizer = FairseqAdam(groups_of(straight), lr=LR, betas=BETAS, eps=EPS)
    train(straight, optimizer.step, range(STEPS))

    first = toy_model()
    optimizer = FairseqAdam(groups_of(first), lr=LR, betas=BETAS, eps=EPS)
    train(first, optimizer.step, range(STEPS // 2))
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)  # as Lightning checkpoints are loaded

    resumed = toy_model()
    resumed.load_state_dict(state["model"])
    optimizer = FairseqAdam(groups_of(resumed), lr=LR, betas=BETAS, eps=EPS)
    optimizer.load_state_dict(state["optimizer"])
    train(resumed, optimizer.step, range(STEPS // 2, STEPS))
    assert torch.equal(flat(resumed), flat(straight))


@pytest.mark.parametrize(
    "no_weight_decay,decayed",
    [
        ([], {"0.weight", "1.weight", "1.bias", "2.weight", "2.bias"}),
        (["bias", "norm", "embedding"], {"1.weight"}),
    ],
)
def test_weight_decay_on_the_documented_groups(no_weight_decay: list[str], decayed: set[str]) -> None:
    """With zero gradients an Adam step is zero: what changes is decay, p <- p (1 - lr·wd), on decayed groups only
    (`module.no_weight_decay`: [] decays every parameter, as fairseq; the kinds listed are exempt)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.LayerNorm(4)).double()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    module = ClassificationModule(
        net,
        partial(FairseqAdam, lr=0.1, betas=BETAS, eps=EPS, weight_decay=0.2),
        no_weight_decay=no_weight_decay,
    )
    optimizer = module.configure_optimizers()["optimizer"]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in net.named_parameters():
        factor = 1 - 0.1 * 0.2 if name in decayed else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=1e-15, atol=0)
