"""compare.sh --launcher slurm on a real one-node SLURM cluster started for these tests
(tests/slurm_cluster.py: slurmctld, slurmd and munged, stopped by their pid files afterwards):
a tiny IWSLT14 comparison on the CPU, one job of it requeued in the middle of its training
(scontrol requeue, as a preemption does), another warned of its time limit (SIGUSR2), both
saving their state at the end of the update they were in and resuming from there."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fairseq_normmatters.recipes.run.convergence import validation_curve
from slurm_cluster import missing_tools, start, stop
from test_iwslt14 import iwslt14  # noqa: F401  (the prepared tiny IWSLT14, a fixture)
from test_recipes import SCRIPTS, TINY_TRANSFORMER

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(
    bool(missing_tools()), reason=f"no SLURM cluster can start here: missing {', '.join(missing_tools())} "
                                  "(scripts/ci/setup_slurm.sh installs the daemons as root with apt)")]

# 60 updates of one CPU thread (6 an epoch), a checkpoint and a validation every 10, each update's
# loss logged
SCHEDULE = [*TINY_TRANSFORMER, "--max-update", "60", "--warmup-updates", "8", "--max-tokens", "2000",
            "--save-interval-updates", "10", "--keep-interval-updates", "5", "--validate-interval-updates", "10",
            "--log-interval", "1", "--cpu", "--num-workers", "0"]
RUNS = ["transformer_l2-seed1", "transformer_l1-seed1", "transformer_l2-seed2", "transformer_l1-seed2"]
WAIT = 600  # seconds at most for a state the test waits for
SLICE = 0.02  # seconds a run trains between two stops


@pytest.fixture(scope="module")
def cluster():
    """The environment (SLURM_CONF) of a one-node cluster running while the module's tests do."""
    root = Path(tempfile.mkdtemp(prefix="normmatters-slurm-"))
    try:
        environment = start(root)
        yield environment
    finally:
        stop(root)
        shutil.rmtree(root, ignore_errors=True)


def run(cluster, *command, check=True):
    result = subprocess.run([*map(str, command)], capture_output=True, text=True, timeout=WAIT,
                            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **cluster})
    if check and result.returncode != 0:
        raise AssertionError(f"{command[0]} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def compare_arguments(prepared, out):
    """compare.sh's arguments for the tiny comparison (--poll 0.2: each state seen, however short)."""
    return ["iwslt14", str(prepared), str(out), "--seeds", "2", "--configs", "transformer_l2", "transformer_l1",
            "--launcher", "slurm", "--max-jobs", "2", "--poll", "0.2"]


def compare(cluster, prepared, out, *options, check=True):
    return run(cluster, SCRIPTS / "compare.sh", *compare_arguments(prepared, out), *options, "--", *SCHEDULE,
               check=check)


def wait_for(what, condition):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT} s for {what}"
        time.sleep(0.1)


def job_state(cluster, job_id) -> str:
    return run(cluster, "squeue", "--noheader", "--array", "--format=%T", "--job", job_id, check=False).stdout.strip()


def stop_after_first_checkpoint(save_dir: Path) -> None:
    """The run's process (one_run.py, which trains in itself) let go in slices of SLICE seconds,
    stopped in between (SIGSTOP), until it has written its first checkpoint (the end of its first
    epoch, 6 updates of 60): it is left stopped in the middle of its training however fast this
    machine trains."""
    wait_for("the run to start training", lambda: "== training: " in log_text(save_dir))
    pid = run_process(save_dir)
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + WAIT
    while not (save_dir / "checkpoint_last.pt").is_file():
        assert time.monotonic() < deadline, f"waited {WAIT} s for the first checkpoint of {save_dir}"
        os.kill(pid, signal.SIGCONT)
        time.sleep(SLICE)
        os.kill(pid, signal.SIGSTOP)


def run_process(save_dir: Path) -> int:
    """The pid of the one_run.py process training `save_dir`."""
    for process in Path("/proc").iterdir():
        try:
            arguments = (process / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"fairseq_normmatters.recipes.run.one_run" in arguments and str(save_dir).encode() in arguments:
            return int(process.name)
    raise AssertionError(f"no one_run.py process of {save_dir}")


def log_text(save_dir: Path) -> str:
    log = save_dir / "compare.log"
    return log.read_text(errors="replace") if log.is_file() else ""


def losses(save_dir: Path):
    """({update: train loss}, the validation curve) from a run's json train.log, the last value
    logged for each update (a resumed run logs the updates after its checkpoint again)."""
    train = {}
    for line in (save_dir / "train.log").read_text().splitlines():
        if line.startswith('{"epoch"') and '"loss"' in line and '"num_updates"' in line:
            record = json.loads(line)
            train[int(record["num_updates"])] = record["loss"]
    return train, validation_curve(save_dir)


def test_a_comparison_through_slurm_resumes_a_requeued_job_and_tabulates(cluster, iwslt14, tmp_path):  # noqa: F811
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    first = compare(cluster, prepared, out)
    submitted = [line for line in first.stdout.splitlines() if ": submitted as job " in line]
    assert [line.split()[2].rstrip(":") for line in submitted] == RUNS
    assert "[compare] submitting 4 job(s), each 1 node(s), batch the CPU x 2000 tokens x 1 = 2000 tokens an update" \
        in first.stdout and "4 of 4 runs are not done" in first.stdout
    requeued = out / "transformer_l1-seed1"
    job = json.loads((requeued / "slurm.json").read_text())["job_id"]

    stop_after_first_checkpoint(requeued)
    run(cluster, "scontrol", "requeue", job)
    wait_for("the requeued job to be pending", lambda: job_state(cluster, job) == "PENDING")
    states = compare(cluster, prepared, out)
    assert (f"[compare] 2/4 transformer_l1-seed1: queued (job {job}, requeued after SIGTERM (preempted or requeued), "
            "its state saved, waiting: ") in states.stdout
    assert "submitted as job" not in states.stdout  # nothing new: every run is queued, running or done
    longer = run(cluster, SCRIPTS / "compare.sh", "iwslt14", prepared, out, "--seeds", "2", "--configs",
                 "transformer_l2", "transformer_l1", "--launcher", "slurm", "--retrain", "--", *SCHEDULE,
                 "--max-update", "70", check=False)
    assert longer.returncode == 1 and "--retrain would move aside runs whose jobs are queued or running: " in longer.stderr
    assert f"transformer_l1-seed1 (job {job})" in longer.stderr and (requeued / "checkpoint_last.pt").is_file()

    # another job gets SLURM's time-limit warning (SIGUSR2, its limit cut to a minute) mid-training: it
    # saves at the end of its update and requeues itself; its limit is then given back
    timed_out = out / "transformer_l2-seed2"
    limited = json.loads((timed_out / "slurm.json").read_text())["job_id"]
    stop_after_first_checkpoint(timed_out)
    run(cluster, "scontrol", "update", f"jobid={limited}", "TimeLimit=1")  # SLURM continues it with the warning
    wait_for("the job to requeue itself", lambda: job_state(cluster, limited) == "PENDING")
    run(cluster, "scontrol", "update", f"jobid={limited}", "TimeLimit=60")
    # both requeued jobs held (SLURM holds a requeued job ~2 min) until --wait has said their
    # state, then let go: it sees each of them queued, then running, then done
    waiting = subprocess.Popen([str(SCRIPTS / "compare.sh"), *compare_arguments(prepared, out), "--wait", "--",
                                *SCHEDULE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **cluster})
    said = []
    while not any(line.startswith("[compare] 4/4 ") for line in said):
        line = waiting.stdout.readline()
        assert line, f"compare.sh --wait ended before saying the runs' states: {''.join(said)}"
        said.append(line)
    for held in (job, limited):
        run(cluster, "scontrol", "update", f"jobid={held}", "StartTime=now")
    rest, errors = waiting.communicate(timeout=WAIT)
    waited = subprocess.CompletedProcess(waiting.args, waiting.returncode, "".join(said) + rest, errors)
    assert waited.returncode == 0, waited.stdout[-3000:] + errors[-3000:]
    assert f"[compare] 2/4 transformer_l1-seed1: queued (job {job}," in waited.stdout
    assert "[compare] 2/4 transformer_l1-seed1: running (job " in waited.stdout
    assert sum(f"{run}: done, BLEU " in waited.stdout for run in RUNS) == 4
    assert "[compare] done in " in waited.stdout and (out / "results.md").is_file()
    for save_dir in (requeued, timed_out):
        log = (save_dir / "compare.log").read_text()
        assert log.count("== training: ") == 2 and log.count("== evaluation: ") == 1
        resumed = int(log.split("Loaded checkpoint ")[1].split(" @ ")[1].split()[0])
        assert 6 < resumed < 60 and f"stopped at the end of update {resumed}, its state saved" in log  # where it stopped
    assert sorted(losses(timed_out)[0]) == list(range(1, 61))
    record = json.loads((timed_out / "slurm.json").read_text())
    job_log = Path(record["stdout"]).read_text() + Path(record["stderr"]).read_text()
    assert "the run stopped on SIGUSR2, its state saved" in job_log and f"[slurm] requeued job {limited}" in job_log

    # the same losses as the same run uninterrupted, here on this machine
    alone = tmp_path / "alone"
    run(cluster, SCRIPTS / "compare.sh", "iwslt14", prepared, alone, "--seeds", "1", "--configs", "transformer_l1",
        "--", *SCHEDULE)
    assert losses(requeued) == losses(alone / "transformer_l1-seed1")
    assert sorted(losses(requeued)[0]) == list(range(1, 61))
    results = json.loads((requeued / "results.json").read_text())
    assert results["bleu"] == json.loads((alone / "transformer_l1-seed1" / "results.json").read_text())["bleu"]

    # evaluated: only what the average and a resume need is left
    kept = sorted(p.name for p in requeued.glob("checkpoint*.pt"))
    assert kept == sorted({*results["checkpoints_averaged"], "checkpoint_last.pt", "checkpoint_avg.pt"})
    table = (out / "results.md").read_text()
    assert "| transformer_l1 | 1, 2 |" in table and " ± " in table
    again = compare(cluster, prepared, out)
    assert sum(f"{run}: done, BLEU " in again.stdout for run in RUNS) == 4 and "submitted as job" not in again.stdout
    assert (out / "results.md").read_text() == table


def test_a_failing_job_is_reported_with_its_log_and_submitted_again_only_once(cluster, iwslt14, tmp_path):  # noqa: F811
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    command = [SCRIPTS / "compare.sh", "iwslt14", prepared, out, "--seeds", "1", "--configs", "transformer_l2",
               "--launcher", "slurm", "--wait", "--poll", "1", "--", *SCHEDULE, "--max-tokens", "many"]
    failed = run(cluster, *command, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 of 1 runs ended without results (said above)" in failed.stderr
    assert "[compare] 1/1 transformer_l2-seed1: failed (job " in failed.stdout and "--max-tokens: invalid" in failed.stdout
    first = json.loads((out / "transformer_l2-seed1" / "slurm.json").read_text())["job_id"]
    assert job_state(cluster, first) == ""  # ended, not requeued
    assert not (out / "results.md").exists()

    again = run(cluster, *command, check=False)  # failed once: submitted again, and fails the same way
    second = json.loads((out / "transformer_l2-seed1" / "slurm.json").read_text())["job_id"]
    assert second != first and f"submitted as job {second}" in again.stdout
    assert f"failed (job {second}): " in again.stdout and f"the same way as job {first} before" in again.stdout
    third = run(cluster, *command, check=False)
    assert "submitted as job" not in third.stdout and f"the same way as job {first} before: not submitted again" in third.stdout


def test_the_preflight_runs_as_one_job_and_projects_an_epoch_budget(cluster, iwslt14, tmp_path):  # noqa: F811
    """compare.sh --preflight --launcher slurm: one job trains the configuration for a few updates
    on its node and the login side prints its table; IWSLT14's budget of 50 epochs becomes
    updates from the training split's tokens and the tokens an update held."""
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    result = run(cluster, SCRIPTS / "compare.sh", "iwslt14", prepared, out, "--preflight", "--preflight-updates", "3",
                 "--configs", "transformer_l2", "--launcher", "slurm", "--poll", "0.5", "--", *TINY_TRANSFORMER,
                 "--max-tokens", "2000",
                 "--cpu", "--num-workers", "0")
    assert "[preflight] submitted as job " in result.stdout and "waiting for it" in result.stdout
    row = next(line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| transformer_l2 |"))
    budget = int(row[10].split("(of ")[1].split()[0])
    assert row[-1] == "ok |" and budget > 50  # 50 epochs of more than one update each
    assert "[preflight] every configuration starts near a uniform guess and trains" in result.stdout
    assert (out / "preflight" / "transformer_l2" / "train.log").is_file()
