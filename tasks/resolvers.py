"""The OmegaConf resolvers the configs use (`${resume_dir:...}`, `${stable_id:...}`, ...).

Anything that composes `conf/` (train.py, experiments, tests) calls `register_resolvers()` first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def resume_dir(ckpt_path: str | None, default: str) -> str:
    """hydra.run.dir: the checkpoint's own run dir when resuming, else `default`."""
    if not ckpt_path:
        return default
    from tasks.training.state import run_dir_of  # imports torch: only when resuming (configs compose fast)

    return str(run_dir_of(ckpt_path))


def stable_id(run_dir: str) -> str:
    """W&B run id derived from the absolute run dir: the same dir resumes the same W&B run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def run_stamp(run_dir: str) -> str:
    """Short readable run label: the last two parts of the run dir (e.g. `runs/2026-01-01_12-00-00` → time)."""
    parts = Path(run_dir).parts
    return parts[-1] if parts[-2:-1] == ("runs",) else "_".join(parts[-2:])


def run_tags(task: str | None, model: str | None, extra: Any) -> list[str]:
    """W&B tags: task and model variant, then the user's `tags`."""
    return [str(t) for t in [task, model, *(extra or [])] if t]


def or_default(value: Any, default: Any) -> Any:
    """`value` unless it is null."""
    return default if value is None else value


RESOLVERS = {
    "resume_dir": resume_dir,
    "stable_id": stable_id,
    "run_stamp": run_stamp,
    "run_tags": run_tags,
    "or_default": or_default,
}


def register_resolvers() -> None:
    """Register every resolver of `RESOLVERS` with OmegaConf (idempotent)."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
