"""compare.sh's options for a cluster and the pieces of --launcher slurm that need no cluster:
time limits, sbatch options, the states read from squeue, the ports of multi-GPU and multi-node
runs, and which task evaluates. (tests/test_slurm.py runs it all on a real SLURM.)"""

import json

import pytest

from fairseq_normmatters.recipes import compare
from fairseq_normmatters.recipes.runs import Run
from fairseq_normmatters.recipes.one_run import first_task
from fairseq_normmatters.recipes.slurm import PORTS, job_port, parse_squeue, run_state, sbatch_options, time_minutes
from fairseq_normmatters.recipes.train import rendezvous_flags


@pytest.mark.parametrize("limit, minutes", [("90", 90), ("1:30", 2), ("24:00:00", 1440), ("1-12:00:00", 2160),
                                            ("2-3", 3060), ("1-0:30", 1470), ("0", None), ("1h", None),
                                            ("1:2:3:4", None), ("-5", None)])
def test_time_limits_read_as_sbatch_reads_them(limit, minutes):
    assert time_minutes(limit) == minutes


def arguments(*options, extra=("--cpu",)):
    return compare.parse_args(["wmt14", "prepared", "out", *options, "--", *extra])


def test_slurm_options_default_to_the_benchmarks_reference_and_the_cpu_with_cpu():
    assert arguments("--launcher", "slurm").gpus_per_node == 0
    args = arguments("--launcher", "slurm", extra=())
    assert (args.gpus_per_node, args.nodes, args.time_minutes, args.max_jobs) == (8, 1, 1440, 64)
    assert compare.parse_args(["iwslt14", "p", "o", "--launcher", "slurm"]).gpus_per_node == 1


@pytest.mark.parametrize("options, message", [
    (["--wait"], "--wait: only with --launcher slurm"),
    (["--partition", "gpu", "--mem", "64G"], "--partition, --mem: only with --launcher slurm"),
    (["--nodes", "2", "--sbatch", "qos=high"], "--nodes, --sbatch: only with --launcher slurm"),
    (["--launcher", "slurm", "--nodes", "2"], "--nodes 2: a run over several nodes needs GPUs"),
    (["--launcher", "slurm", "--time", "soon"], "--time 'soon': give minutes (e.g. 90) or [D-]HH:MM:SS"),
    (["--launcher", "slurm", "--max-jobs", "0"], "--max-jobs 0: needs at least 1"),
    (["--launcher", "slurm", "--poll", "0"], "--poll 0.0: needs a positive number of seconds"),
])
def test_a_wrong_cluster_option_is_named_with_what_is_allowed(options, message, capsys):
    with pytest.raises(SystemExit):
        arguments(*options)
    assert message in capsys.readouterr().err


def test_a_run_over_two_nodes_names_its_world_size_for_the_papers_batch():
    args = arguments("--launcher", "slurm", "--nodes", "2", "--gpus-per-node", "8", extra=())
    run = Run(1, "transformer_l1", 3, None)
    assert run.extra(args) == ["--distributed-world-size", "16", "--seed", "3"]
    assert Run(1, "transformer_l1", 3, None).extra(arguments()) == ["--cpu", "--seed", "3"]


def test_sbatch_options_become_key_values():
    assert sbatch_options(["account=nlp", "--qos=high", "exclusive"]) == {"account": "nlp", "qos": "high",
                                                                        "exclusive": True}


def test_a_runs_state_comes_from_its_results_and_squeue(tmp_path):
    active = parse_squeue("12_0|RUNNING\n12_1|PENDING\n13|COMPLETING\n")
    assert active == {"12_0": "RUNNING", "12_1": "PENDING", "13": "COMPLETING"}
    runs = {}
    for job in ("12_0", "12_1", "13", "11_4"):
        run = runs[job] = Run(1, "transformer_l2", 1, tmp_path / job)
        run.save_dir.mkdir()
        (run.save_dir / "slurm.json").write_text(json.dumps({"job_id": job, "stderr": "e"}))
    assert [run_state(runs[job], active)[0] for job in ("12_0", "12_1", "13", "11_4")] == [
        "running", "queued", "running", "failed"]
    (runs["11_4"].save_dir / "results.json").write_text("{}")
    assert run_state(runs["11_4"], active)[0] == "done"
    assert run_state(Run(2, "transformer_l2", 2, tmp_path / "none"), active) == ("new", None)


def test_multi_gpu_runs_meet_on_ports_of_their_own():
    assert rendezvous_flags(1) == [] and rendezvous_flags(0) == []
    flag, address = rendezvous_flags(4)
    assert flag == "--distributed-init-method" and address.startswith("tcp://localhost:")
    assert job_port("4242") == job_port("4242_3") != job_port("4243")
    assert PORTS[0] <= job_port("123456789") < sum(PORTS)


def test_only_the_first_task_of_a_job_evaluates(monkeypatch):
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    assert first_task()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert first_task()
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert not first_task()
