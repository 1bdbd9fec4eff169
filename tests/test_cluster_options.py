"""compare.sh's options for a cluster and the pieces of --launcher slurm that need no cluster:
time limits, sbatch options, the states read from squeue, the ports of multi-GPU and multi-node
runs, and which task evaluates. (tests/test_slurm.py runs it all on a real SLURM.)"""

import json

import pytest

from fairseq_normmatters.recipes import compare
from fairseq_normmatters.recipes.run.runs import Run
from fairseq_normmatters.recipes.run.one_run import first_task
from fairseq_normmatters.recipes.launch.slurm.launcher import parse_squeue, print_dry_run, run_state
from fairseq_normmatters.recipes.launch.slurm.endings import log_state, resubmission
from fairseq_normmatters.recipes.launch.slurm.job import PORTS, job_port
from fairseq_normmatters.recipes.launch.slurm.options import (job_folder, job_parameters, python_command, sbatch_options,
                                                               sbatch_script, time_minutes)
from fairseq_normmatters.recipes.run.command import rendezvous_flags


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


@pytest.mark.parametrize("options", [
    ("--nodes", "2", "--gres", "gpu:h100:8", "--account", "nlp", "--setup", "module load cuda/12.4", "--setup",
     "source ~/venv/bin/activate", "--python", "/opt/venv/bin/python"),
    ("--gpus-per-node", "h100:4", "--exclusive", "--partition", "gpu", "--mem", "64G", "--qos", "high", "--constraint",
     "h100&ib", "--sbatch", "wckey=nlp", "--sbatch=--requeue", "--time", "90", "--max-jobs", "3"),
    ("--cpus-per-run", "3")])
@pytest.mark.parametrize("count", [1, 2, 70])
def test_the_script_written_here_is_the_one_submitits_executor_submits(options, count):
    """--dry-run's script is written by the package, not by submitit's private
    _make_sbatch_string; that function (what SlurmExecutor submits for the same parameters) is
    the oracle here, over GPU requests as counts and as gres, set-up lines, sbatch extras, the
    exclusive flag, one job and arrays above and below --max-jobs."""
    from submitit.slurm.slurm import _make_sbatch_string
    args = arguments("--launcher", "slurm", *options, extra=("--cpu",) if "--cpus-per-run" in options else ())
    folder = job_folder(args)
    submitted = _make_sbatch_string(command=f"{python_command(args)} -u -m submitit.core._submit {folder}",
                                    folder=folder, **job_parameters(args, "job"), **({"map_count": count} if count > 1 else {}))
    assert sbatch_script(args, "job", count) == submitted


def test_sbatch_options_become_key_values():
    assert sbatch_options(["account=nlp", "--qos=high", "exclusive"]) == {"account": "nlp", "qos": "high",
                                                                        "exclusive": True}


def test_a_runs_state_comes_from_its_results_and_squeue(tmp_path):
    active = parse_squeue("12_0|RUNNING|None\n12_1|PENDING|Priority\n13|COMPLETING|None\n")
    assert active == {"12_0": ("RUNNING", "None"), "12_1": ("PENDING", "Priority"), "13": ("COMPLETING", "None")}
    runs = {}
    for job in ("12_0", "12_1", "13", "11_4"):
        run = runs[job] = Run(1, "transformer_l2", 1, tmp_path / job)
        run.save_dir.mkdir()
        (run.save_dir / "slurm.json").write_text(json.dumps({"job_id": job, "stderr": "e"}))
    assert [run_state(runs[job], active)[0] for job in ("12_0", "12_1", "13", "11_4")] == [
        "running", "queued", "running", "ended"]
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


def test_a_dry_run_prints_the_script_of_two_nodes_of_eight_typed_gpus_without_a_wckey(capsys, tmp_path):
    args = arguments("--launcher", "slurm", "--nodes", "2", "--gres", "gpu:h100:8", "--account", "nlp",
                     "--exclusive", "--setup", "module load cuda/12.4", "--python", "/opt/venv/bin/python",
                     "--sbatch", "export=NONE", extra=())
    print_dry_run([Run(1, "transformer_l2", 1, tmp_path / "transformer_l2-seed1")], args)
    script = capsys.readouterr().out.split("(nothing was submitted):\n", 1)[1]
    for line in ("#SBATCH --gres=gpu:h100:8", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --exclusive",
                 "#SBATCH --account=nlp", "#SBATCH --cpus-per-task=32", "#SBATCH --export=NONE",
                 "#SBATCH --signal=USR2@90", "# setup\nmodule load cuda/12.4"):
        assert line + "\n" in script, line
    assert "wckey" not in script and "gpus-per-node" not in script
    assert "--cpus-per-task 32 /opt/venv/bin/python -u -m submitit.core._submit" in script
    assert not (tmp_path / "transformer_l2-seed1").exists()


def test_a_wckey_is_sent_only_when_given(capsys, tmp_path):
    run = Run(1, "transformer_l2", 1, tmp_path / "transformer_l2-seed1")
    print_dry_run([run], arguments("--launcher", "slurm", "--sbatch", "wckey=nlp-2026"))
    assert "#SBATCH --wckey=nlp-2026\n" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    (["--gpus-per-node", "8", "--gres", "gpu:8"], "--gpus-per-node 8 and --gres gpu:8: two GPU requests; give one"),
    (["--gpus-per-node", "h100:eight"], "--gpus-per-node 'h100:eight': give G or TYPE:G"),
    (["--gres", "tpu:8"], "--gres 'tpu:8': give gpu:G or gpu:TYPE:G"),
    (["--sbatch", "gpus-per-node=h100:8"], "--sbatch gpus-per-node=h100:8: compare.sh writes gpus-per-node itself; "
                                           "give --gpus-per-node or --gres"),
    (["--sbatch", "A=nlp"], "--sbatch A=nlp: compare.sh writes A itself; give --account"),
    (["--sbatch", "job-name=x"], "compare.sh writes job-name itself"),
    (["--resubmit", "everything"], "argument --resubmit: invalid choice: 'everything'"),
])
def test_a_gpu_request_or_sbatch_key_given_twice_is_refused_by_name(options, message, capsys):
    with pytest.raises(SystemExit):
        arguments("--launcher", "slurm", *options, extra=())
    assert message in capsys.readouterr().err


def test_a_typed_gpu_request_keeps_its_type_and_counts_its_gpus():
    args = arguments("--launcher", "slurm", "--gpus-per-node", "a100:4", extra=())
    assert (args.gpus_per_node, args.gpu_request) == (4, {"gpus_per_node": "a100:4"})
    args = arguments("--launcher", "slurm", "--gres", "gpu:2", extra=())
    assert (args.gpus_per_node, args.gpu_request) == (2, {"gres": "gpu:2"})
    assert arguments("--launcher", "slurm").gpu_request == {}  # --cpu


@pytest.mark.parametrize("stderr, state", [
    ("slurmstepd: error: *** JOB 41 ON vm CANCELLED AT 2026-12-04T01:02:03 DUE TO TIME LIMIT ***", "TIMEOUT"),
    ("slurmstepd: error: *** JOB 41 ON vm CANCELLED AT 2026-12-04T01:02:03 DUE TO PREEMPTION ***", "PREEMPTED"),
    ("slurmstepd: error: *** JOB 41 ON vm CANCELLED AT 2026-12-04T01:02:03 DUE TO NODE FAILURE ***", "NODE_FAIL"),
    ("slurmstepd: error: Detected 1 oom_kill event in StepId=41.0.", "OUT_OF_MEMORY"),
    ("slurmstepd: error: *** JOB 41 ON vm CANCELLED AT 2026-12-04T01:02:03 ***", "CANCELLED"),
    ("submitit ERROR (2026-12-04 01:02:03) - Submitted job triggered an exception", "FAILED"),
    ("submitit INFO (2026-12-04 01:02:03) - Job completed successfully", "COMPLETED"),
    ("", None),
])
def test_an_ending_is_read_from_the_jobs_error_stream_once_slurm_forgot_it(stderr, state, tmp_path):
    (tmp_path / "41_0_log.err").write_text(f"some output\n{stderr}\n")
    assert log_state({"stderr": str(tmp_path / "41_0_log.err")}) == state


def test_a_cancelled_run_or_one_failed_twice_the_same_way_is_not_submitted_again():
    failed = {"state": "FAILED", "detail": "RuntimeError: CUDA out of memory"}
    first = {"job_id": "12_0", "history": []}
    assert resubmission(first, failed, ()) is None
    second = {"job_id": "14_0", "history": [{"job_id": "12_0", "ending": failed}]}
    assert "the same way as job 12_0 before: not submitted again" in resubmission(second, failed, ())
    assert resubmission(second, failed, ("failed",)) is None
    assert resubmission(second, {"state": "FAILED", "detail": "another error"}, ()) is None
    assert "--resubmit cancelled" in resubmission(first, {"state": "CANCELLED", "detail": ""}, ())
    assert resubmission(first, {"state": "CANCELLED", "detail": ""}, ("cancelled",)) is None
    for resumed in ("TIMEOUT", "PREEMPTED", "NODE_FAIL", "NEVER_STARTS"):
        assert resubmission(second, {"state": resumed, "detail": ""}, ()) is None


def test_a_local_comparison_never_imports_submitit_and_slurm_without_it_names_the_extra(tmp_path, monkeypatch):
    """submitit is the `slurm` extra: importing the comparison (and so any local run) does not
    import it, --dry-run does not need it, and --launcher slurm without it is one line naming the
    extra, before anything is written."""
    import subprocess
    import sys
    from fairseq_normmatters.recipes.common import RecipeError
    from fairseq_normmatters.recipes.launch.slurm.launcher import compare_on_slurm
    imported = subprocess.run([sys.executable, "-c", "import sys, fairseq_normmatters.recipes.compare as c; "
                               "print(sorted(m for m in sys.modules if m.startswith('submitit')))"],
                              capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    out = tmp_path / "out"
    args = compare.parse_args(["iwslt14", "prepared", str(out), "--launcher", "slurm", "--dry-run", "--", "--cpu"])
    runs = [Run(1, "transformer_l2", 1, out / "transformer_l2-seed1")]
    print_dry_run(runs, args)  # no submitit needed
    args = compare.parse_args(["iwslt14", "prepared", str(out), "--launcher", "slurm", "--", "--cpu"])
    with pytest.raises(RecipeError, match=r"^--launcher slurm needs submitit, which is not installed here .*pip install "
                                          r"'fairseq_normmatters\[slurm\]' \(nothing was submitted\)$"):
        compare_on_slurm(runs, args)
    assert not out.exists()
