"""experiments.harness: warm-up, repeats, medians, CPU time and peak memory, in this process and in a fresh one."""

import os
import signal

import pytest

from experiments import harness


def counting_builder(options, device):
    """A step that allocates `options["mib"]` MiB and counts its calls (fresh-process tests use it too)."""
    calls = []

    def step():
        calls.append(bytearray(options["mib"] * harness.MIB))
        calls[-1] = len(calls)  # the buffer is freed again: only the peak sees it

    return step, {"calls": calls, "option": options["mib"]}


def killing_builder(options, device):
    return (lambda: os.kill(os.getpid(), signal.SIGKILL)), {}


def test_time_steps_warms_up_then_times_each_repeat():
    step, info = counting_builder({"mib": 64}, "cpu")
    result = harness.time_steps(step, warmup=2, repeats=3, memory=True)
    assert len(info["calls"]) == 5  # 2 untimed + 3 timed
    assert len(result["times_s"]) == len(result["cpu_times_s"]) == 3
    assert result["median_s"] == sorted(result["times_s"])[1] and result["median_cpu_s"] >= 0
    assert result["peak_mib"] >= 60  # each timed step touches 64 MiB above the post-warm-up level


def test_alternate_takes_turns_within_each_round_and_skips_the_warm_up_rounds():
    order = []
    steps = {name: (lambda name=name: order.append(name)) for name in ("ours", "hf")}
    results = harness.alternate(steps, warmup=1, repeats=2)
    assert order == ["ours", "hf"] * 3
    assert {name: len(r["times_s"]) for name, r in results.items()} == {"ours": 2, "hf": 2}


def test_counts_must_leave_a_warm_up_and_a_timed_step():
    with pytest.raises(ValueError, match="warmup=0"):
        harness.Job("experiments.bench_mega:build_hf", {}, warmup=0)
    with pytest.raises(ValueError, match="repeats=0"):
        harness.time_steps(lambda: None, warmup=1, repeats=0)


def test_run_job_measures_in_a_fresh_process_and_reports_a_killed_one():
    builder = "tests.experiments.test_harness:counting_builder"
    result = harness.run_job(harness.Job(builder, {"mib": 32}, threads=1, warmup=1, repeats=2))
    assert result["option"] == 32 and result["calls"] == [1, 2, 3]  # the builder's info, from the child
    assert len(result["times_s"]) == 2 and result["threads"] == 1 and result["process_s"] > 0
    assert result["peak_mib"] >= 28
    killed = harness.run_job(harness.Job("tests.experiments.test_harness:killing_builder", {}))
    assert killed == {"error": "killed by signal 9"}
