"""compare.sh --launcher slurm as a production cluster meets it, on the real one-node SLURM of
tests/slurm_cluster.py (two partitions, the high one preempting the low one by requeue; two
GPUs of type `fake`): the script it submits (the --dry-run's, no wckey, a typed GPU request, the
job's own set-up line run), a real preemption resumed at the update it stopped at, each ending
told apart (a cancelled run not resubmitted, a timed-out one resubmitted, a job that can never
start cancelled at once), and two calls at once submitting each run once."""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from slurm_cluster import GPU_TYPE, HIGH, HIGH_MAX_MINUTES
from test_iwslt14 import iwslt14  # noqa: F401  (the prepared tiny IWSLT14, a fixture)
from test_recipes import SCRIPTS
from test_slurm import (RUNS, SCHEDULE, WAIT, cluster, compare_arguments, job_state, log_text,  # noqa: F401
                        losses, pytestmark, run, run_process, stop_after_first_checkpoint, wait_for)

ONE_RUN = ["--seeds", "1", "--configs", "transformer_l1"]


def one_run(cluster, prepared, out, *options, check=True):  # noqa: F811
    return run(cluster, SCRIPTS / "compare.sh", "iwslt14", prepared, out, *ONE_RUN, "--launcher", "slurm",
               "--poll", "0.2", *options, "--", *SCHEDULE, check=check)


def job_of(save_dir: Path) -> str:
    return json.loads((save_dir / "slurm.json").read_text())["job_id"]


def test_the_submitted_script_is_the_dry_runs_with_a_typed_gpu_request_the_setup_and_no_wckey(
        cluster, iwslt14, tmp_path):  # noqa: F811
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    options = ["--gpus-per-node", f"{GPU_TYPE}:1", "--cpus-per-run", "1", "--precision", "fp32",
               "--setup", "echo normmatters-setup ran on $(hostname)"]
    dry = one_run(cluster, prepared, out, *options, "--dry-run")
    script = dry.stdout.split("(nothing was submitted):\n", 1)[1]
    assert "wckey" not in script and f"#SBATCH --gpus-per-node={GPU_TYPE}:1\n" in script
    assert "# setup\necho normmatters-setup ran on $(hostname)\n" in script and " --cpus-per-task 1 " in script
    assert not (out / "transformer_l1-seed1").exists() and not (out / "slurm").exists()

    submitted = one_run(cluster, prepared, out, *options)
    save_dir = out / "transformer_l1-seed1"
    job = job_of(save_dir)
    assert f"submitted as job {job}" in submitted.stdout
    name = json.loads((save_dir / "slurm.json").read_text())["name"]  # the submission's own: normmatters-iwslt14-TOKEN
    assert (out / "slurm" / f"{job}_submission.sh").read_text().strip() == script.strip().replace(
        "--job-name=normmatters-iwslt14-TOKEN", f"--job-name={name}")
    shown = run(cluster, "scontrol", "show", "job", job).stdout
    assert f"gres/gpu:{GPU_TYPE}=1" in shown or f"gpu:{GPU_TYPE}:1" in shown, shown
    wait_for("the job's set-up line", lambda: "normmatters-setup ran on " in job_output(save_dir))

    run(cluster, "scancel", job)
    wait_for("the job to end", lambda: job_state(cluster, job) == "")
    again = one_run(cluster, prepared, out, *options)
    assert f"cancelled (job {job}" in again.stdout and "submitted as job" not in again.stdout
    assert "--resubmit cancelled" in again.stdout


def run_seconds(cluster, job: str) -> int:
    """How long SLURM says the job has run."""
    shown = run(cluster, "scontrol", "show", "job", job).stdout
    clock = re.search(r"RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)", shown)
    days, hours, minutes, seconds = (int(part or 0) for part in clock.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def job_output(save_dir: Path) -> str:
    record = json.loads((save_dir / "slurm.json").read_text())
    return "".join(Path(record[key]).read_text(errors="replace") for key in ("stdout", "stderr")
                   if Path(record[key]).is_file())


def test_a_preempted_run_saves_at_its_update_and_resumes_there_to_the_same_losses(
        cluster, iwslt14, tmp_path):  # noqa: F811
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    one_run(cluster, prepared, out, "--cpus-per-run", str(os.cpu_count()))  # the whole node: a high job preempts it
    save_dir = out / "transformer_l1-seed1"
    job = job_of(save_dir)
    stop_after_first_checkpoint(save_dir)  # stopped in its second epoch, after the checkpoint of update 6
    trainer = run_process(save_dir)
    run(cluster, "sbatch", "--partition", HIGH, "--cpus-per-task", str(os.cpu_count()), "--output", "/dev/null",
        "--wrap", "sleep 1")
    wait_for("the preempted run to save its state", lambda: "stopped at the end of update" in log_text(save_dir))
    stopped = int(re.search(r"SIGTERM: stopped at the end of update (\d+)", log_text(save_dir))[1])
    assert stopped > 6
    wait_for("the preempted job to be requeued", lambda: job_state(cluster, job) == "PENDING")
    queued = one_run(cluster, prepared, out, "--cpus-per-run", str(os.cpu_count()))
    assert f"queued (job {job}, requeued after SIGTERM (preempted or requeued), its state saved" in queued.stdout
    assert "submitted as job" not in queued.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(trainer, 0)  # the trainer exited (after saving), not killed mid-save
    run(cluster, "scontrol", "update", f"jobid={job}", "StartTime=now")  # SLURM holds a requeued job a while
    waited = one_run(cluster, prepared, out, "--cpus-per-run", str(os.cpu_count()), "--wait")
    assert "done, BLEU " in waited.stdout
    log = log_text(save_dir)
    assert int(log.split("Loaded checkpoint ")[-1].split(" @ ")[1].split()[0]) == stopped
    assert f"SIGTERM: stopped at the end of update {stopped}" in log
    events = [json.loads(line) for line in (save_dir / "slurm-events.jsonl").read_text().splitlines()]
    assert [(event["job_id"], event["signal"]) for event in events] == [(job, "SIGTERM")]

    alone = tmp_path / "alone"
    run(cluster, SCRIPTS / "compare.sh", "iwslt14", prepared, alone, *ONE_RUN, "--", *SCHEDULE)
    assert losses(save_dir) == losses(alone / "transformer_l1-seed1")



def test_a_timed_out_run_and_a_job_that_can_never_start_are_told_apart(cluster, iwslt14, tmp_path):  # noqa: F811
    _, prepared = iwslt14
    never = one_run(cluster, prepared, tmp_path / "never", "--partition", HIGH, "--time", str(HIGH_MAX_MINUTES + 5),
                    "--wait", check=False)
    assert never.returncode == 1 and "can never start (PartitionTimeLimit" in never.stderr, never.stderr
    cancelled = json.loads((tmp_path / "never" / "transformer_l1-seed1" / "slurm.json").read_text())
    assert job_state(cluster, cancelled["job_id"]) == "" and cancelled["ending"]["state"] == "NEVER_STARTS"
    again = one_run(cluster, prepared, tmp_path / "never", "--partition", HIGH, "--time", "5", "--dry-run")
    assert "#SBATCH --time=5\n" in again.stdout

    out = tmp_path / "timeout"
    one_run(cluster, prepared, out, "--time", "10")
    save_dir = out / "transformer_l1-seed1"
    job = job_of(save_dir)
    wait_for("the run to start training", lambda: "== training: " in log_text(save_dir))
    os.kill(run_process(save_dir), signal.SIGSTOP)  # it stays unfinished
    # a limit already past: SLURM ends the job at once, with no warning first (a warning would requeue it)
    wait_for("the job to run a minute", lambda: run_seconds(cluster, job) > 60)
    run(cluster, "scontrol", "update", f"jobid={job}", "TimeLimit=1")
    wait_for("the job to time out", lambda: job_state(cluster, job) == "")
    timed_out = one_run(cluster, prepared, out, "--time", "10")
    assert f"timed out (job {job}); to be submitted again (it resumes where it stopped)" in timed_out.stdout
    assert "submitted as job " in timed_out.stdout
    run(cluster, "scancel", job_of(save_dir))


def test_two_calls_at_once_submit_each_run_once(cluster, iwslt14, tmp_path):  # noqa: F811
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    calls = [subprocess.Popen([str(SCRIPTS / "compare.sh"), *compare_arguments(prepared, out), "--", *SCHEDULE],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **cluster}) for _ in range(2)]
    outputs = [call.communicate(timeout=WAIT)[0] for call in calls]
    assert [call.returncode for call in calls] == [0, 0], outputs
    submitted = [line for output in outputs for line in output.splitlines() if ": submitted as job " in line]
    assert sorted(line.split()[2] for line in submitted) == sorted(f"{name}:" for name in RUNS)
    jobs = {json.loads((out / name / "slurm.json").read_text())["job_id"] for name in RUNS}
    assert len(jobs) == 4 and all(job in " ".join(submitted) for job in jobs)

    # a call that stopped between sbatch and the write of the job id: the next finds the job by its name
    crashed = out / RUNS[1] / "slurm.json"
    record = json.loads(crashed.read_text())
    crashed.write_text(json.dumps({"submitting": record["name"], "task": record["task"], "history": []}))
    again = run(cluster, SCRIPTS / "compare.sh", *compare_arguments(prepared, out), "--", *SCHEDULE)
    assert f"{RUNS[1]}: found its job {record['job_id']} by the name {record['name']}" in again.stdout
    assert "submitted as job" not in again.stdout and json.loads(crashed.read_text())["job_id"] == record["job_id"]
    run(cluster, "scancel", *{job.split("_")[0] for job in jobs})
