"""What a training checkpoint holds besides the weights, and how to get a net back out of one.

A checkpoint (`<run dir>/checkpoints/*.ckpt`, written by Lightning) holds the module's `state_dict` (the net's
weights under the `net.` prefix), the optimizer and schedule, the loader position, and from `on_save_checkpoint`:
`rng_states` (Python, NumPy, torch) so a resumed run draws the same numbers, `net_options` (the options the net was
built with) and `net_class` (its import path), so `load_net` rebuilds the net without Hydra.

Checkpoints are verified when read: `with_checksums` (called by the trainer's checkpoint writer,
`tasks.training.checkpoint_io`, on the final dict) stores a SHA-256 of every other top-level entry under
`checksums`; `read_checkpoint` loads with `weights_only=True`, recomputes them and names the damaged entries. A file
that torch cannot read at all (empty, truncated, random bytes) is reported as damaged too, naming the file.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

NET_PREFIX = "net."  # the LightningModules keep the network as `self.net`
CHECKSUMS = "checksums"  # checkpoint key: {"sha256": {top-level key: hex digest of its contents}}


def count_parameters(net: nn.Module) -> dict[str, int]:
    """{"total", "embedding"}: from the net's own `param_counts()` when it has one (Contract 2)."""
    if hasattr(net, "param_counts"):
        return dict(net.param_counts())
    embedding = sum(p.numel() for m in net.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    return {"total": sum(p.numel() for p in net.parameters()), "embedding": embedding}


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain types and tensors (loadable with weights_only=True)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of `rng_states`."""
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def options_of(net: nn.Module) -> dict[str, Any] | None:
    """The options the net was built with, when it exposes them (`net.config.to_dict()` or a dataclass)."""
    config = getattr(net, "config", None)
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if hasattr(config, "__dataclass_fields__"):
        return {name: getattr(config, name) for name in config.__dataclass_fields__}
    return None


def changes_the_function(option: str) -> bool:
    """Whether a model option changes what the trained weights compute (dropout rates do not: they may change
    between training, fine-tuning and evaluation; nor does activation checkpointing, which saves memory)."""
    return "dropout" not in option and option != "activation_checkpointing"


def check_model_options(saved: dict[str, Any] | None, current: dict[str, Any] | None, what: str) -> None:
    """Fail naming every model option (that changes the function) where `saved` and `current` differ."""
    if saved is None or current is None:
        return
    differ = sorted(
        k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k) and changes_the_function(k)
    )
    if differ:
        details = ", ".join(
            f"model.{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in differ
        )
        raise ValueError(
            f"the checkpoint was trained with another model config ({details}); use the same model options {what}"
        )


def checkpoint_file(path: str | Path, option: str = "ckpt_path") -> Path:
    """A .ckpt file as given, or the last checkpoint of a run dir (or of its checkpoints/ folder); errors name
    `option`, the config option that gave the path."""
    given = Path(path)
    candidates = [given] if given.is_file() else [given / "checkpoints" / "last.ckpt", given / "last.ckpt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{option}={path}: no checkpoint at {' or '.join(str(c) for c in candidates)}")


def run_dir_of(path: str | Path) -> Path:
    """The run dir a checkpoint (file, checkpoints/ folder or run dir) belongs to."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return folder.parent if folder.name == "checkpoints" else folder


def net_class_name(net: nn.Module) -> str:
    return f"{type(net).__module__}.{type(net).__qualname__}"


class DamagedCheckpoint(ValueError):
    """A checkpoint file that cannot be read, or whose contents differ from what was written."""


def _digest(value: Any, sha: Any) -> None:
    """Feed a canonical serialisation of `value` (tensors: dtype, shape, bytes; containers in key order) to `sha`."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1).cpu().contiguous()
        sha.update(f"tensor {flat.dtype} {tuple(value.shape)}|".encode())
        sha.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        sha.update(f"dict {len(value)}|".encode())
        for key in sorted(value, key=repr):
            sha.update(f"{key!r}:".encode())
            _digest(value[key], sha)
    elif isinstance(value, (list, tuple)):
        sha.update(f"{type(value).__name__} {len(value)}|".encode())
        for item in value:
            _digest(item, sha)
    else:
        sha.update(f"{value!r}|".encode())


def checksums(checkpoint: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every top-level entry of a checkpoint dict but `checksums` itself."""
    digests = {}
    for key, value in checkpoint.items():
        if key != CHECKSUMS:
            sha = hashlib.sha256()
            _digest(value, sha)
            digests[str(key)] = sha.hexdigest()
    return digests


def with_checksums(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """`checkpoint` with the checksums of its entries stored in it (call last, on the dict that is written)."""
    checkpoint[CHECKSUMS] = {"sha256": checksums(checkpoint)}
    return checkpoint


def _damaged(path: Path, reason: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(
        f"checkpoint {path} is damaged or not a checkpoint ({reason}). Delete it and resume from another "
        f"checkpoint of the run ({path.parent}/*.ckpt), or start the run again without ckpt_path"
    )


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint loaded with `weights_only=True` (safe whatever its origin) and verified against its stored
    checksums; raises DamagedCheckpoint naming the file (and the damaged entries) instead of torch's errors.
    Checkpoints written before checksums were stored load unverified (logged)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise _damaged(path, "the file is empty")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:  # a readable file holding arbitrary Python objects: never unpickle those
            raise DamagedCheckpoint(
                f"checkpoint {path} holds Python objects other than tensors and plain types ({found.group(1)}); "
                "checkpoints are read with weights_only=True, so this file cannot be used: it was not written by "
                "this project's training"
            ) from None
        raise _damaged(path, "its contents are not a PyTorch checkpoint") from None
    except (
        Exception
    ) as error:  # truncated archives and random bytes fail in many ways (OSError, IndexError, ...)
        raise _damaged(
            path, f"torch cannot read it: {type(error).__name__}, truncated or overwritten?"
        ) from None
    if not isinstance(state, dict):
        raise _damaged(path, f"it holds a {type(state).__name__}, not a checkpoint dict")
    stored = state.get(CHECKSUMS)
    if stored is None:
        log.info("checkpoint %s has no checksums (written by an older version): not verified", path)
        return state
    expected, actual = stored.get("sha256", {}), checksums(state)
    differ = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    if differ:
        raise _damaged(path, f"{', '.join(differ)} differ from what was written")
    return state


def load_net(checkpoint: str | Path, net_class: type[nn.Module] | None = None) -> nn.Module:
    """The network of a training checkpoint (a .ckpt file or a run dir: its last.ckpt), in eval mode.

    The class comes from the checkpoint (`net_class`, recorded since this version; only classes of the `mega`
    package are imported) or from the argument, e.g. for older checkpoints: `load_net(path, mega.MegaForCausalLM)`.
    """
    path = checkpoint_file(checkpoint)
    state = read_checkpoint(path)
    options = state.get("net_options")
    if options is None:
        raise ValueError(
            f"{path} holds no net_options: it was not written by this project's training modules"
        )
    if net_class is None:
        name = state.get("net_class")
        if name is None:
            raise ValueError(
                f"{path} does not record its net class: pass it, e.g. load_net(path, mega.MegaForCausalLM)"
            )
        module_name, _, class_name = name.rpartition(".")
        if module_name.split(".")[0] != "mega":
            raise ValueError(f"{path}: net class {name} is not a class of the mega package; pass net_class")
        net_class = getattr(importlib.import_module(module_name), class_name)
    net = net_class(**options)
    weights = {
        k.removeprefix(NET_PREFIX): v for k, v in state["state_dict"].items() if k.startswith(NET_PREFIX)
    }
    net.load_state_dict(weights)
    return net.eval()
