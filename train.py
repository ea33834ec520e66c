"""Train and test one model: `python train.py experiment=lra_listops [overrides]` (see README).

seed → instantiate datamodule, module, callbacks, loggers, trainer (all by `_target_`) → fit → test the
best-validation checkpoint → write results.json into the run dir → return the monitored metric (for sweepers).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tasks.resolvers import register_resolvers
from tasks.training.state import checkpoint_file, count_parameters

log = logging.getLogger("train")


register_resolvers()


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` node of a group (callbacks, logger); empty or null nodes are skipped."""
    return [hydra.utils.instantiate(node) for node in (group or {}).values() if node and "_target_" in node]


def relaunch_this_job_only() -> None:
    """Lightning DDP starts its other ranks by re-running `sys.argv`: in a multirun that would be the whole sweep,
    so make it this job's overrides alone (the ranks then share this job's run dir)."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *HydraConfig.get().overrides.task, "hydra.mode=RUN"]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as configured; return the results written to results.json."""
    started = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    module: L.LightningModule = hydra.utils.instantiate(cfg.module)
    callbacks, loggers = instantiate_all(cfg.get("callbacks")), instantiate_all(cfg.get("logger"))
    relaunch_this_job_only()
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)

    ckpt = checkpoint_file(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    if ckpt is not None:
        log.info("Resuming from %s", ckpt)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    test_metrics: dict[str, float] = {}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test"):
        if not best:
            log.warning(
                "No best checkpoint (no checkpoint callback or no validation): testing the final weights"
            )
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}

    counts = count_parameters(module.net)
    results = {
        "experiment": cfg.get("name"),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "val/acc_best": fit_metrics.get("val/acc_best"),
        **{k: test_metrics.get(k) for k in ("test/acc", "test/loss")},
        **test_metrics,
        "params/total": counts["total"],
        "params/embedding": counts["embedding"],
        "steps": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train/samples_per_second": module.samples_seen / module.train_time if module.train_time else None,
        "best_checkpoint": best or None,
        "run_dir": str(run_dir),
    }
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        log.info("Results: %s", json.dumps(results))
    results["metric"] = fit_metrics.get(cfg.optimized_metric, results.get(cfg.optimized_metric))
    return results


def finish_wandb_run() -> None:
    """End this job's W&B run, if a W&B logger started one: each job of a multirun must be its own W&B run."""
    wandb = sys.modules.get("wandb")  # never imported when no W&B logger was configured
    if wandb is not None and wandb.run is not None:
        wandb.finish()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)["metric"]
    except Exception:
        if cfg.get("failed_trial_value") is None:
            raise  # a basic multirun still runs its other jobs and reports this failure at the end
        # an Optuna study would stop at the first failed trial: score it as the worst and search on
        log.exception(
            "This trial failed; it scores failed_trial_value=%s and the search goes on",
            cfg.failed_trial_value,
        )
        return cfg.failed_trial_value
    finally:
        finish_wandb_run()


if __name__ == "__main__":
    main()
