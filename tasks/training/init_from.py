"""`init_from=<run dir or .ckpt>`: start a run from the encoder weights of another run (self-pretraining, docs/spt.md).

The checkpoint may be a self-pretraining run's (a `mega.pretraining.SelfPretrainingModel`) or any classifier run's of
this project. Only the encoder is copied, exactly (`net.encoder.*`); the head stays as the new net built it. The
model options must agree, except those of the head and the pretraining head; otherwise this fails naming each one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from mega.pretraining import OWN_OPTIONS
from tasks.training.state import (
    NET_PREFIX,
    check_model_options,
    checkpoint_file,
    net_class_name,
    options_of,
    read_checkpoint,
    run_dir_of,
)

log = logging.getLogger(__name__)

ENCODER_PREFIX = NET_PREFIX + "encoder."
# options of a classifier's head (pooling, pair combination and classes), free to differ from the source run's;
# with the Transformer's pooling=cls the <CLS> vector is an encoder weight, which the strict load then names
HEAD_OPTIONS = ("num_labels", "pooling", "dual_encoder", "pair_combine", "classifier_dropout")


def encoder_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in HEAD_OPTIONS and k not in OWN_OPTIONS}


def source_class(state: dict[str, Any]) -> str | None:
    """The classifier class of a checkpoint: the one a self-pretraining run pretrained, or the net's own class."""
    return (state.get("net_options") or {}).get("pretraining_classifier") or state.get("net_class")


def describe(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """What results.json records of the source run: checkpoint, run dir, step, objective, experiment, overrides."""
    run_dir = run_dir_of(path)
    record: dict[str, Any] = {
        "checkpoint": str(path),
        "run_dir": str(run_dir),
        "step": state.get("global_step"),
        "pretraining": state.get("pretraining"),
    }
    results = run_dir / "results.json"
    if results.is_file():
        finished = json.loads(results.read_text())
        record.update({k: finished.get(k) for k in ("experiment", "overrides", "steps")})
        record["finished"] = True
    else:
        record["finished"] = False
    return record


def read_source(source: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file of `init_from` (a run dir: its last.ckpt) and its verified contents."""
    path = checkpoint_file(source, option="init_from")
    return path, read_checkpoint(path)


def check_source(source: str | Path, state: dict[str, Any], net_class: str, options: dict[str, Any]) -> None:
    """Fail unless the checkpoint holds the encoder of a `net_class` built with these options (up to the head's
    options and dropout rates), naming the model or each option that differs."""
    saved = state.get("net_options")
    if saved is None:
        raise ValueError(
            f"init_from={source}: the checkpoint holds no net_options: it was not written by this project"
        )
    theirs = source_class(state)
    if theirs != net_class:
        raise ValueError(
            f"init_from={source}: the checkpoint holds the encoder of a {theirs}, this run builds a {net_class}: "
            "choose the same model (model=...) as the pretraining run"
        )
    mine = encoder_options(saved) | encoder_options(options)  # options the config leaves out: the saved ones
    check_model_options(encoder_options(saved), mine, f"with init_from={source}")


def initialise_encoder(net: nn.Module, source: str | Path, load: bool = True) -> dict[str, Any]:
    """Copy the encoder weights of the checkpoint at `source` (a run dir: its last.ckpt) into `net.encoder`;
    return the record of the source run for results.json. load=False only reads the record (a resumed run
    already holds the weights)."""
    path, state = read_source(source)
    record = describe(path, state)
    if not load:
        return record
    if not record["finished"]:
        log.warning(
            "init_from=%s: %s has no results.json (the run did not finish): its checkpoint of step %s is used",
            source,
            record["run_dir"],
            record["step"],
        )
    options = options_of(net) or {}
    check_source(source, state, net_class_name(net), options)
    saved = state["net_options"]
    weights = {
        k.removeprefix(ENCODER_PREFIX): v
        for k, v in state["state_dict"].items()
        if k.startswith(ENCODER_PREFIX)
    }
    result = net.encoder.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        differ = [
            f"model.{k}: checkpoint {saved.get(k)!r} vs config {options.get(k)!r}"
            for k in HEAD_OPTIONS
            if k in saved and saved.get(k) != options.get(k)
        ]
        raise ValueError(
            f"init_from={source}: the encoder weights do not fit (missing {result.missing_keys}, unexpected "
            f"{result.unexpected_keys}); head options that differ: {', '.join(differ) or 'none'}"
        )
    log.info(
        "init_from=%s: loaded %d encoder tensors from %s (step %s)",
        source,
        len(weights),
        path,
        record["step"],
    )
    return record
