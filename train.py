"""Train and test one model: `python train.py experiment=lra_listops [overrides]` (see README).

check the config (model option types, the checkpoint to resume) → save it in the run dir → seed → instantiate
datamodule, module, callbacks, loggers, trainer (all by `_target_`) → copy the encoder weights of `init_from`
(self-pretraining, docs/spt.md) → fit → test the best-validation checkpoint →
write results.json into the run dir → return the monitored metric (for sweepers).

A failed run prints one line, `Error: ...`, naming its traceback's place (the run's train.log). Lightning and the
data libraries are imported only after the checks, so that a bad option fails in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tasks.resolvers import register_resolvers

log = logging.getLogger("train")
COMMAND_LINE = False  # set when run as `python train.py`: failures are reported in one line, not re-raised


register_resolvers()


class RunFailed(CompactHydraException):
    """A job of a multirun failed: Hydra reports this one-line message (the traceback is in the job's train.log)."""


def net_options(model: DictConfig) -> dict[str, Any]:
    """The model config's options, resolved, without Hydra's `_target_` keys."""
    return {k: v for k, v in OmegaConf.to_container(model, resolve=True).items() if not k.startswith("_")}


def check_model_types(model: DictConfig) -> None:
    """Type-check the model options against the net's `config_class` (Contract 2) before anything is built."""
    from mega.config import check_option_types  # mega imports torch: the first heavy import

    config_class = getattr(hydra.utils.get_class(model._target_), "config_class", None)
    if config_class is not None:
        check_option_types(config_class, net_options(model), prefix="model")


def check_resume(cfg: DictConfig) -> None:
    """Refuse a checkpoint that is damaged or was trained with other model options before the run dir is
    touched: the run dir keeps its config, CSV versions and W&B run."""
    from tasks.training.state import check_model_options, checkpoint_file, read_checkpoint

    saved = read_checkpoint(checkpoint_file(cfg.ckpt_path)).get("net_options")
    if saved is not None:
        check_model_options(saved, {**saved, **net_options(cfg.model)}, "to resume it")


def check_init_from(cfg: DictConfig) -> None:
    """Refuse an `init_from` checkpoint of another model or other model options before the run dir is touched
    (docs/spt.md); the weights are copied once the net is built."""
    from tasks.training.init_from import check_source, read_source

    net_class = hydra.utils.get_class(cfg.model._target_)
    _, state = read_source(cfg.init_from)
    check_source(
        cfg.init_from, state, f"{net_class.__module__}.{net_class.__qualname__}", net_options(cfg.model)
    )


def save_run_config(cfg: DictConfig) -> None:
    """Write `.hydra/{config,hydra,overrides}.yaml` into the run dir as Hydra does. Hydra's own writing is off
    (`hydra.output_subdir: null`): it happens before the job starts, so a refused resume would overwrite them."""
    if not HydraConfig.initialized():
        return
    folder = Path(cfg.paths.output_dir) / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, folder / "overrides.yaml")


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
    import lightning as L
    import torch

    from tasks.training.checkpoint_io import RelocatedCheckpoints, VerifiedCheckpointIO
    from tasks.training.console import tidy_console
    from tasks.training.init_from import initialise_encoder
    from tasks.training.precision import precision_arguments
    from tasks.training.state import checkpoint_file, count_parameters

    tidy_console()  # again: Lightning has added its own console handler

    started = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    module: L.LightningModule = hydra.utils.instantiate(cfg.module)
    callbacks, loggers = instantiate_all(cfg.get("callbacks")), instantiate_all(cfg.get("logger"))
    relaunch_this_job_only()
    precision = precision_arguments(cfg.trainer)  # 16-mixed on CPU: its own plugin instead of the flag
    plugins = [
        *(hydra.utils.instantiate(p) for p in cfg.trainer.get("plugins") or []),
        VerifiedCheckpointIO(),
        *precision.pop("plugins", []),
    ]
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[*callbacks, RelocatedCheckpoints()],
        logger=loggers or False,
        plugins=plugins,
        **precision,
    )

    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)

    ckpt = checkpoint_file(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    if ckpt is not None:
        log.info("Resuming from %s", ckpt)
    # a resumed run holds the initialised weights already: only the record of the source run is read then
    init_from = (
        initialise_encoder(module.net, cfg.init_from, load=ckpt is None) if cfg.get("init_from") else None
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    test_metrics: dict[str, float] = {}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test"):
        if best:
            log.info("Testing the best-validation checkpoint %s", best)
        else:
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
        **{k: v for k, v in fit_metrics.items() if k.startswith("val/") and k.endswith("_best")},
        **{k: test_metrics.get(k) for k in ("test/acc", "test/loss")},
        **test_metrics,
        "params/total": counts["total"],
        "params/embedding": counts["embedding"],
        "steps": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train/samples_per_second": module.samples_seen / module.train_time if module.train_time else None,
        "best_checkpoint": best or None,
        "run_dir": str(run_dir),
        "init_from": init_from,
    }
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        log.info("Results: %s", json.dumps(results))
    results["metric"] = fit_metrics.get(cfg.optimized_metric, results.get(cfg.optimized_metric))
    return results


def finish_wandb_run() -> None:
    """End this job's W&B run, if a W&B logger started one: each job of a multirun must be its own W&B run.
    An offline run gets its config and summary written into its `files/` first (readable without W&B)."""
    wandb = sys.modules.get("wandb")  # never imported when no W&B logger was configured
    if wandb is not None and wandb.run is not None:
        if wandb.run.offline:
            from tasks.training.reporting import write_offline_files

            write_offline_files(wandb.run)
        wandb.finish()


def the_cause(error: BaseException) -> BaseException:
    """The error a user can act on: without Hydra's "Error in call to target" wrapper."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def log_files() -> list[Path]:
    """The files the logging writes to (Hydra's job logging: the run's train.log)."""
    return [Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def log_traceback(error: BaseException) -> None:
    """The whole traceback (chained worker tracebacks included) into the log files, not onto the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "The run failed:", (), None)
    record.exc_text = "".join(traceback.format_exception(error)).rstrip()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def report_failure(cfg: DictConfig, error: Exception) -> float:
    """One line on the console, the traceback in train.log; a sweep's other jobs go on."""
    cause = the_cause(error)
    where = f" (traceback in {', '.join(map(str, log_files()))})" if log_files() else ""
    summary = f"{type(cause).__name__}: {cause}{where}"
    log_traceback(error)
    if cfg.get("failed_trial_value") is not None:
        # an Optuna study would stop at the first failed trial: score it as the worst and search on
        log.error(
            "This trial failed; it scores failed_trial_value=%s and the search goes on. %s",
            cfg.failed_trial_value,
            summary,
        )
        return cfg.failed_trial_value
    if not COMMAND_LINE or os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error  # Python callers get the exception itself; HYDRA_FULL_ERROR=1 asks for the whole traceback
    finish_wandb_run()  # W&B prints its closing lines: before the error, so that the error is the last line
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        log.error("%s", summary)
        raise RunFailed(summary) from error  # the basic sweeper runs the other jobs, then reports this one
    sys.stderr.write(f"Error: {summary}\n")
    raise SystemExit(1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from tasks.training.console import tidy_console  # tasks.training imports torch: after Hydra composed

    tidy_console()
    try:
        check_model_types(cfg.model)
        if cfg.get("ckpt_path"):
            check_resume(cfg)
        elif cfg.get("init_from"):
            check_init_from(cfg)
        save_run_config(cfg)
        return train(cfg)["metric"]
    except Exception as error:
        return report_failure(cfg, error)
    finally:
        finish_wandb_run()


if __name__ == "__main__":
    COMMAND_LINE = True
    main()
