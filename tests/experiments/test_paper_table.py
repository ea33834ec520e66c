"""experiments.paper_table: the whole paper table as Hydra multiruns, printed by --dry-run."""

import shlex

import pytest

from experiments import paper_table


def dry_run(capsys, *args):
    assert paper_table.main(["--dry-run", *args]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def test_default_is_every_task_mega_and_chunk_five_seeds(capsys):
    mega, chunk = dry_run(capsys)
    tasks = paper_table.available_tasks()
    assert {
        "lra_text",
        "lra_retrieval",
        "lra_image",
        "lra_pathfinder",
        "lra_pathx",
        "sc_raw",
        "sc_raw_big",
    } <= set(tasks)
    assert mega[1:3] == ["train.py", "-m"]
    assert f"experiment={','.join(tasks)}" in mega
    assert f"experiment={','.join(t + '_chunk' for t in tasks)}" in chunk
    assert "seed=1,2,3,4,5" in mega and "seed=1,2,3,4,5" in chunk
    assert "hydra.sweep.dir=multirun/paper_table/mega_chunk" in chunk


def test_transformer_runs_only_tasks_with_a_baseline_size(capsys):
    (cmd,) = dry_run(
        capsys,
        "--models",
        "transformer",
        "--tasks",
        "lra_text",
        "sc_raw",
        "--seeds",
        "7",
        "--",
        "trainer=ddp",
        "data.num_workers=2",
    )
    assert "experiment=lra_text" in cmd  # SC-Raw has no Transformer (out of memory in the paper)
    assert "model=transformer" in cmd and "seed=7" in cmd
    assert cmd[-2:] == ["trainer=ddp", "data.num_workers=2"]


def test_megalodon_runs_every_task_and_its_chunked_variant(capsys):
    full, chunk = dry_run(capsys, "--models", "megalodon", "megalodon_chunk", "--seeds", "1")
    tasks = "lra_listops,lra_text,lra_retrieval,lra_image,lra_pathfinder,lra_pathx"
    assert f"experiment={tasks},sc_raw" in full and "model=megalodon" in full
    assert f"experiment={tasks}" in chunk and "model=megalodon_chunk" in chunk  # SC-Raw: one model (c = 1000)
    assert "hydra.sweep.dir=multirun/paper_table/megalodon_chunk" in chunk


def test_unknown_task_is_an_error(capsys):
    with pytest.raises(SystemExit):
        paper_table.main(["--dry-run", "--tasks", "lra_cifar"])
    assert "no experiment config for ['lra_cifar']" in capsys.readouterr().err


def test_spt_adds_one_chain_per_task_model_and_seed(capsys):
    cmds = dry_run(
        capsys, "--spt", "--models", "mega", "transformer", "--tasks", "lra_text", "sc_raw", "--seeds", "1"
    )
    multiruns = [c for c in cmds if c[1] == "train.py"]
    chains = [c[3:] for c in cmds if c[1:3] == ["-m", "experiments.spt"]]
    assert len(multiruns) == 2 and len(cmds) == 5  # from scratch as without --spt, then the chains
    assert chains == [
        ["experiment=lra_text", "seed=1", "--dir", "multirun/paper_table/mega_spt/lra_text/seed1"],
        ["experiment=sc_raw", "seed=1", "--dir", "multirun/paper_table/mega_spt/sc_raw/seed1"],
        # the Transformer has no SC-Raw size
        [
            "experiment=lra_text",
            "seed=1",
            "model=transformer",
            "--dir",
            "multirun/paper_table/transformer_spt/lra_text/seed1",
        ],
    ]
