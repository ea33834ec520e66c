"""experiments.report: groups runs by their resolved config, compares only unchanged recipes with the paper, and
leaves out (naming them) stand-in, debug, unfinished and crashed runs. Fake job folders, no training."""

import json
import logging
import statistics
import sys
import types
from pathlib import Path

import pytest
import yaml
from PIL import Image

from experiments import paper, report

MEGA = "mega.MegaForSequenceClassification"
TRANSFORMER = "mega.TransformerForSequenceClassification"
# each experiment's recipe as the few options these tests need (a saved config holds them all)
RECIPES = {
    "lra_text": {"data": "tasks.data.text.TextDataModule", "chunk_size": -1, "max_steps": 25000},
    "lra_text_chunk": {"data": "tasks.data.text.TextDataModule", "chunk_size": 128, "max_steps": 25000},
    "lra_image": {"data": "tasks.data.image.ImageDataModule", "chunk_size": -1, "max_steps": 90000},
    "lra_listops": {"data": "tasks.data.listops.ListOpsDataModule", "chunk_size": -1, "max_steps": 90000},
    "lra_retrieval": {
        "data": "tasks.data.retrieval.RetrievalDataModule",
        "chunk_size": -1,
        "max_steps": 91960,
    },
    "lra_pathfinder": {
        "data": "tasks.data.pathfinder.PathfinderDataModule",
        "chunk_size": -1,
        "max_steps": 250000,
    },
    "lra_pathx": {
        "data": "tasks.data.pathfinder.PathfinderDataModule",
        "chunk_size": -1,
        "max_steps": 125000,
    },
    "my_text": {"data": "tasks.data.text.TextDataModule", "chunk_size": -1, "max_steps": 2000},
}


def saved_config(experiment, seed, overrides=(), target=MEGA):
    """What Hydra saves as .hydra/config.yaml: interpolations as written, the overrides applied."""
    recipe = RECIPES[experiment]
    config = {
        "name": "${or_default:${hydra:runtime.choices.experiment},train}",
        "seed": seed,
        "torch_threads": None,
        "data": {
            "_target_": recipe["data"],
            "synthetic": False,
            "vocab_size": 257,
            "seed": "${seed}",
            "num_workers": 0,
            "root_dir": "${paths.data_dir}",
        },
        "model": {"_target_": target, "vocab_size": "${data.vocab_size}", "chunk_size": recipe["chunk_size"]},
        "trainer": {"max_steps": recipe["max_steps"], "precision": "32-true", "devices": 1},
        "paths": {"data_dir": "${oc.env:DATA_DIR,./data}", "output_dir": "${hydra:runtime.output_dir}"},
    }
    for override in overrides:
        key, _, value = override.partition("=")
        if key in ("model", "trainer", "debug"):  # a group choice: its effect on the config
            config["model"]["_target_"] = (
                TRANSFORMER if value == "transformer" else config["model"]["_target_"]
            )
            config["trainer"]["precision"] = (
                "bf16-mixed" if value == "gpu" else config["trainer"]["precision"]
            )
            if key == "debug":
                config["debug_preset"] = value
                config["data"]["synthetic"] = True
            continue
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return config


def write_run(root, name, experiment, seed, acc, overrides=(), target=MEGA, steps=None, results=True):
    """A job folder as train.py leaves it: .hydra/{config,overrides,hydra}.yaml and (unless crashed) results.json."""
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    command = [f"experiment={experiment}", f"seed={seed}", *overrides]
    config = saved_config(experiment, seed, overrides, target)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(command))
    debug = next((o.partition("=")[2] for o in overrides if o.startswith("debug=")), None)
    choices = {"experiment": experiment, "debug": debug, "model": "mega"}
    (folder / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
    )
    if results:
        result = {
            "experiment": experiment,
            "overrides": command,
            "val/acc_best": acc + 0.01,
            "test/acc": acc,
            "params/total": 1_000_000,
            "params/embedding": 512,
            "steps": config["trainer"]["max_steps"] if steps is None else steps,
        }
        (folder / "results.json").write_text(json.dumps(result))
    return folder


def reported(root, *flags):
    """(groups, left out) as `python -m experiments.report root [flags]` builds them."""
    kept, left_out = report.select(report.load_local(root), *flags)
    return report.group(kept), left_out


def labels(groups):
    return sorted((g.row, g.label, len(g.runs)) for g in groups)


def table_row(text, title):
    line = next(line for line in text.splitlines() if line.startswith(f"| {title} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_runs_that_differ_only_in_the_seed_are_averaged_next_to_the_paper(tmp_path):
    for seed, acc, ignored in [
        (1, 0.90, "data.num_workers=4"),
        (2, 0.92, "model.activation_checkpointing=true"),
        (3, 0.91, "data.num_workers=4"),
    ]:
        write_run(tmp_path, f"text/{seed}", "lra_text", seed, acc, [ignored])  # options that change no result
    write_run(tmp_path, "text_chunk/1", "lra_text_chunk", 1, 0.88)
    write_run(tmp_path, "text_xfm/1", "lra_text", 1, 0.65, ["model=transformer"], target=TRANSFORMER)
    groups, left_out = reported(tmp_path)
    assert left_out == {}
    assert labels(groups) == [("Text", "MEGA", 3), ("Text", "MEGA-chunk", 1), ("Text", "Transformer", 1)]
    text = report.markdown_report(groups, left_out, str(tmp_path))
    cells = table_row(text, "Text")
    expected = f"{statistics.fmean([90, 92, 91]):.2f} ± {statistics.stdev([90, 92, 91]):.2f} (n=3)"
    assert cells[1:3] == [expected, "90.43"]  # MEGA ours / paper (Table 2)
    assert cells[3:5] == ["88.00 (n=1)", "90.19"]  # MEGA-chunk
    assert cells[5:7] == ["65.00 (n=1)", "65.21"]  # Transformer vs XFM‡
    assert "1,000,000 / 999,488" in text  # #Params total / without embedding
    assert "Other configurations" not in text


def test_a_sweep_gets_one_group_per_value_whatever_the_experiment_is_called(tmp_path):
    """Item: a model.chunk_size=16,32 sweep was averaged into one cell unless the experiment was a paper one."""
    for experiment in ("lra_text", "my_text"):
        for job, (chunk, seed) in enumerate([(16, 1), (16, 2), (32, 1), (32, 2)]):
            acc = 0.5 + chunk / 100 + seed / 1000
            write_run(tmp_path, f"{experiment}/{job}", experiment, seed, acc, [f"model.chunk_size={chunk}"])
    groups, _ = reported(tmp_path)
    assert labels(groups) == [
        ("lra_text", "MEGA-chunk (model.chunk_size=16)", 2),
        ("lra_text", "MEGA-chunk (model.chunk_size=32)", 2),
        ("my_text", "MEGA-chunk (model.chunk_size=16)", 2),
        ("my_text", "MEGA-chunk (model.chunk_size=32)", 2),
    ]
    assert not any(g.published for g in groups)  # a changed recipe is never next to the paper's number
    text = report.markdown_report(groups, {}, "multirun")
    assert "No group ran a paper recipe unchanged" in text
    assert "| lra_text | MEGA-chunk (model.chunk_size=16) | 66.15 ± 0.07 (n=2) | 1, 2 |" in text


def test_runs_with_other_step_counts_are_never_averaged(tmp_path):
    write_run(tmp_path, "a", "lra_listops", 1, 0.40, ["trainer.max_steps=1000"])
    write_run(tmp_path, "b", "lra_listops", 1, 0.20, ["trainer.max_steps=5"])
    write_run(tmp_path, "c", "lra_listops", 2, 0.22, ["trainer.max_steps=5"])
    groups, _ = reported(tmp_path)
    assert labels(groups) == [
        ("lra_listops", "MEGA (trainer.max_steps=1000)", 1),
        ("lra_listops", "MEGA (trainer.max_steps=5)", 2),
    ]


def test_standin_debug_and_unfinished_runs_are_left_out_and_named(tmp_path, caplog):
    write_run(tmp_path, "recipe", "lra_listops", 1, 0.60)
    smoke = write_run(
        tmp_path, "debug/smoke", "lra_listops", 1, 0.125, ["debug=smoke", "trainer.max_steps=4"]
    )
    standin = write_run(tmp_path, "standin", "lra_listops", 1, 0.99, ["data.synthetic=true"])
    short = write_run(
        tmp_path, "short", "lra_listops", 2, 0.30, steps=500
    )  # max_time or a kill before the end
    groups, left_out = reported(tmp_path)
    assert labels(groups) == [("ListOps", "MEGA", 1)]
    assert {reason: [run.source for run in runs] for reason, runs in left_out.items()} == {
        "debug": [str(smoke)],
        "standin": [str(standin)],
        "unfinished": [str(short)],
    }
    text = report.markdown_report(groups, left_out, str(tmp_path))
    assert table_row(text, "ListOps")[1:3] == ["60.00 (n=1)", "63.14"]
    assert f"- 1 run on stand-in data (data.synthetic=true; --include-standin):\n  - {standin}" in text
    assert str(smoke) in text and str(short) in text

    with caplog.at_level(logging.WARNING):
        assert report.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert (
        f"left out 1 run on stand-in data (data.synthetic=true; --include-standin): {standin}" in caplog.text
    )

    # asked for, they are reported, each as its own group, and none of them next to a paper number
    groups, left_out = reported(tmp_path, True, True, True)
    assert left_out == {}
    assert labels(groups) == [
        ("ListOps", "MEGA", 1),
        ("lra_listops", "MEGA (data.synthetic=true)", 1),
        ("lra_listops", "MEGA (debug=smoke, trainer.max_steps=4)", 1),
        ("lra_listops", "MEGA (stopped at step 500)", 1),
    ]


def test_every_job_folder_without_results_is_warned_about(tmp_path, caplog):
    """A crashed job of a sweep has a .hydra folder and no results.json."""
    for job in range(3):
        write_run(tmp_path, f"sweep/{job}", "lra_text", job + 1, 0.9, results=job != 1)
    with caplog.at_level(logging.WARNING):
        groups, left_out = reported(tmp_path)
    crashed = tmp_path / "sweep" / "1"
    assert f"{crashed}: no results.json" in caplog.text
    assert [run.source for run in left_out["no_results"]] == [str(crashed)]
    assert labels(groups) == [("Text", "MEGA", 2)]
    assert (
        f"without results.json (crashed, killed or still running; or not valid JSON):\n  - {crashed}"
        in report.markdown_report(groups, left_out, "sweep")
    )


def test_the_chart_legend_shows_the_paper_only_where_a_tick_is_drawn(tmp_path):
    write_run(tmp_path, "sweep/0", "my_text", 1, 0.7, ["model.chunk_size=16"])
    groups, _ = reported(tmp_path)
    assert report.bar_chart(groups, tmp_path / "a.png") == ["MEGA-chunk (model.chunk_size=16)"]
    write_run(tmp_path, "recipe/0", "lra_text", 1, 0.9)
    groups, _ = reported(tmp_path)
    assert sorted(report.bar_chart(groups, tmp_path / "b.png")) == [
        "MEGA",
        "MEGA-chunk (model.chunk_size=16)",
        "paper",
    ]
    with Image.open(tmp_path / "b.png") as png:
        assert png.format == "PNG" and png.size[0] > 100


def test_the_model_comes_from_the_resolved_config_not_the_experiment_name(tmp_path):
    write_run(tmp_path, "a", "lra_text", 1, 0.9, ["model.chunk_size=128"])
    write_run(tmp_path, "b", "lra_text_chunk", 1, 0.8, ["model.chunk_size=-1"])
    write_run(
        tmp_path, "c", "lra_text", 2, 0.7, target=TRANSFORMER
    )  # the Transformer named only in the config
    runs = {run.source.rsplit("/", 1)[-1]: run for run in report.load_local(tmp_path)}
    assert (runs["a"].model, runs["b"].model, runs["c"].model) == ("MEGA-chunk", "MEGA", "Transformer")
    # a: the same config as the MEGA-chunk recipe but for the name, so the same group as that recipe's runs
    write_run(tmp_path, "d", "lra_text_chunk", 2, 0.86)
    groups, _ = reported(tmp_path)
    chunk = next(g for g in groups if g.published and g.model == "MEGA-chunk")
    assert sorted(run.source.rsplit("/", 1)[-1] for run in chunk.runs) == ["a", "d"]
    # W&B logs the resolved config, nested or flattened with "/"
    config = report.flatten({"model/_target_": MEGA, "model": {"chunk_size": 4096}, "data": {"seed": 3}})
    assert paper.model_name(config) == "MEGA-chunk" and config["data.seed"] == 3


def test_a_recipe_on_other_hardware_keeps_the_paper_but_gets_its_own_column(tmp_path):
    write_run(tmp_path, "cpu", "lra_text", 1, 0.90)
    write_run(tmp_path, "gpu/1", "lra_text", 1, 0.89, ["trainer=gpu", "trainer.devices=1"])
    write_run(tmp_path, "gpu/2", "lra_text", 2, 0.91, ["trainer=gpu", "trainer.devices=1"])
    groups, _ = reported(tmp_path)
    assert labels(groups) == [("Text", "MEGA", 1), ("Text", "MEGA (trainer=gpu, trainer.devices=1)", 2)]
    text = report.markdown_report(groups, {}, "outputs")
    assert "| Task | MEGA (ours) | MEGA (paper) | MEGA (trainer=gpu, trainer.devices=1) (ours) | " in text
    assert table_row(text, "Text")[3:5] == ["90.00 ± 1.41 (n=2)", "90.43"]


def test_groups_that_would_share_a_name_are_told_apart_by_their_configs(tmp_path):
    """W&B runs without a recorded command line: only their configs tell them apart."""
    runs = [
        report.Run(
            f"wandb/{chunk}",
            report.resolved_config(saved_config("my_text", 1, [f"model.chunk_size={chunk}"])),
            None,
            {"test/acc": 0.5},
        )
        for chunk in (16, 32)
    ]
    assert [g.label for g in report.group(runs[:1])] == ["MEGA-chunk"]  # alone: nothing to tell apart
    groups = report.group(runs)
    assert sorted(g.label for g in groups) == [
        "MEGA-chunk (model.chunk_size=16)",
        "MEGA-chunk (model.chunk_size=32)",
    ]


def test_a_model_family_is_added_in_paper_py_alone(tmp_path, monkeypatch):
    """One Family and its Published rows: the report recognises the runs and shows the paper's number."""
    family = paper.Family("Newcomer", ("NewcomerForSequenceClassification",))
    monkeypatch.setattr(paper, "FAMILIES", (*paper.FAMILIES, family))
    score = paper.Published("Text", "Newcomer", 90.62, ("lra_text",), "a paper, Table 6")
    monkeypatch.setattr(paper, "PUBLISHED", (*paper.PUBLISHED, score))
    monkeypatch.setattr(paper, "LRA_AVERAGE", {**paper.LRA_AVERAGE, "Newcomer": 88.0})
    write_run(
        tmp_path,
        "m",
        "lra_text",
        1,
        0.9,
        ["model=newcomer"],
        target="mega.NewcomerForSequenceClassification",
    )
    groups, _ = reported(tmp_path)
    assert labels(groups) == [("Text", "Newcomer", 1)]
    text = report.markdown_report(groups, {}, "outputs")
    assert table_row(text, "Text")[1:3] == ["90.00 (n=1)", "90.62"]
    assert table_row(text, "LRA avg")[1:3] == ["–", "88.00"] and "a paper, Table 6" in text


def test_lra_average_only_when_all_six_tasks(tmp_path):
    tasks = ["lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder"]
    for i, task in enumerate(tasks):
        write_run(tmp_path, f"{task}/1", task, 1, 0.5 + 0.01 * i)

    def average():
        groups, _ = reported(tmp_path)
        return table_row(report.markdown_report(groups, {}, "x"), "LRA avg")[1:3]

    assert average() == ["–", "88.21"]
    write_run(tmp_path, "lra_pathx/1", "lra_pathx", 1, 0.9)
    assert average() == [f"{statistics.fmean([50, 51, 52, 53, 54, 90]):.2f}", "88.21"]


def test_main_writes_markdown_and_png_and_fails_clearly_without_runs(tmp_path, capsys):
    write_run(tmp_path, "runs/1", "lra_text", 1, 0.9)
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert (out / "report.md").read_text().startswith("# Report:")
    assert (out / "report.png").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 1
    assert "no reportable runs" in capsys.readouterr().err


def test_wandb_runs_are_read_from_config_summary_and_command_line(monkeypatch, caplog):
    def wandb_run(name, state, seed, acc, args):
        config = json.loads(json.dumps(saved_config("lra_text", seed)))
        config["data"]["seed"] = seed  # W&B holds the resolved config
        config["model"]["vocab_size"] = 257
        summary = {"test/acc": acc, "_step": 10}
        metadata = {"args": args}
        return types.SimpleNamespace(
            url=f"wandb/{name}", state=state, config=config, summary=summary, metadata=metadata
        )

    runs = [
        wandb_run("a", "finished", 1, 0.90, ["experiment=lra_text", "seed=1", "hydra.mode=RUN"]),
        wandb_run("b", "finished", 2, 0.92, ["experiment=lra_text", "seed=2"]),
        wandb_run("c", "crashed", 3, 0.10, ["experiment=lra_text", "seed=3"]),
    ]
    api = types.SimpleNamespace(runs=lambda project: runs)
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=lambda: api))
    with caplog.at_level(logging.WARNING):
        loaded = report.load_wandb("me/mega-lra")
    assert "wandb/c: W&B state 'crashed'" in caplog.text
    kept, left_out = report.select(loaded)
    assert [run.source for run in left_out["no_results"]] == ["wandb/c"]
    (group,) = report.group(kept)
    assert (group.row, group.label, group.accuracies) == ("Text", "MEGA", [90.0, 92.0])


CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "debug").glob("*.yaml")))
def test_debug_presets_write_apart_and_mark_their_runs(preset):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    conf = CONF
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose(
            "config", overrides=[f"debug={preset}", "experiment=lra_text"], return_hydra_config=True
        )
    GlobalHydra.instance().clear()
    assert cfg.debug_preset == preset
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert (
        "${paths.log_dir}/debug/" in hydra["run"]["dir"]
        and "${paths.log_dir}/debug/" in hydra["sweep"]["dir"]
    )


def test_megalodon_and_megalodon_chunk_stand_next_to_the_megalodon_paper(tmp_path):
    megalodon = "mega.MegalodonForSequenceClassification"
    write_run(tmp_path, "m/1", "lra_text", 1, 0.91, ["model=megalodon"], target=megalodon)
    write_run(tmp_path, "mc/1", "lra_text_chunk", 1, 0.90, ["model=megalodon"], target=megalodon)
    # experiment=lra_text model=megalodon_chunk: the model choice picks the chunked architecture
    chosen = write_run(tmp_path, "mc/2", "lra_text", 2, 0.88, ["model=megalodon_chunk"], target=megalodon)
    config = yaml.safe_load((chosen / ".hydra" / "config.yaml").read_text())
    config["model"]["chunk_size"] = 128
    (chosen / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    groups, left_out = reported(tmp_path)
    assert left_out == {}
    assert labels(groups) == [("Text", "Megalodon", 1), ("Text", "Megalodon-chunk", 2)]
    text = report.markdown_report(groups, left_out, str(tmp_path))
    assert table_row(text, "Text")[1:5] == ["91.00 (n=1)", "90.48", "89.00 ± 1.41 (n=2)", "90.53"]
    assert "Other configurations" not in text


def test_the_megalodon_paper_numbers():
    for model in ("Megalodon", "Megalodon-chunk"):  # the transcribed Table 6 rows give its averages
        mean = statistics.fmean(
            paper.published(task, model).accuracy for task, b in paper.TASKS.items() if b == "LRA"
        )
        assert abs(mean - paper.LRA_AVERAGE[model]) <= 0.005 + 1e-9
    assert paper.published("SC-Raw base", "Megalodon-chunk").accuracy == 98.14  # Table 7, c = 1000
    assert paper.published_for("sc_raw", "Megalodon-chunk").source.endswith("Table 7")


def started_from(folder, experiment, objective="masked", overrides=(), finished=True):
    """Give a job folder's results.json the record train.py writes for `init_from=<pretraining run>`."""
    results = json.loads((folder / "results.json").read_text())
    results["init_from"] = {
        "checkpoint": f"/elsewhere/{folder.name}/checkpoints/last.ckpt",  # a path of its own for every seed
        "run_dir": f"/elsewhere/{folder.name}",
        "experiment": experiment,
        "overrides": [f"experiment={experiment}", *overrides],
        "pretraining": {"objective": objective, "mask_rate": 0.5, "target": "tokens"},
        "finished": finished,
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_self_pretrained_runs_stand_next_to_the_same_recipe_from_scratch(tmp_path):
    for seed, acc in [(1, 0.90), (2, 0.92)]:
        write_run(tmp_path, f"scratch/{seed}", "lra_text", seed, acc)
        spt = write_run(
            tmp_path, f"spt/{seed}", "lra_text", seed, acc + 0.02, [f"init_from=/elsewhere/{seed}"]
        )
        started_from(spt, "lra_text_spt", overrides=[f"seed={seed}"])
    short = write_run(tmp_path, "spt_short/1", "lra_text", 1, 0.80, ["init_from=/elsewhere/short"])
    started_from(short, "lra_text_spt", overrides=["trainer.max_steps=100"])
    pretraining = write_run(tmp_path, "pretraining/1", "lra_text", 1, 0.30)
    config = yaml.safe_load((pretraining / ".hydra" / "config.yaml").read_text())
    config["module"] = {"_target_": "tasks.training.pretraining.PretrainingModule"}
    (pretraining / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))

    groups, left_out = reported(tmp_path)
    assert [run.source for run in left_out["pretraining"]] == [str(pretraining)]
    assert labels(groups) == [
        ("Text", "MEGA", 2),
        ("Text", "MEGA + SPT", 2),
        ("lra_text", "MEGA + SPT (pretraining trainer.max_steps=100)", 1),
    ]
    text = report.markdown_report(groups, left_out, str(tmp_path))
    header = next(line for line in text.splitlines() if line.startswith("| Task |"))
    assert header.index("MEGA (ours)") < header.index("MEGA + SPT (ours)")
    cells = table_row(text, "Text")
    assert cells[1:3] == ["91.00 ± 1.41 (n=2)", "90.43"] and cells[3:5] == ["93.00 ± 1.41 (n=2)", "–"]
    assert "| lra_text | MEGA + SPT (pretraining trainer.max_steps=100) | 80.00 (n=1) | 1 |" in text
