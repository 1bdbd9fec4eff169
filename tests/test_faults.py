"""Faults lose nothing (docs/reliability.md): one writer per run folder whatever is killed, and a
graceful stop on every path that trains; real processes and real signals on tiny IWSLT14 data.

The tests wait for states (an update logged, a process gone), never for a time: each wait ends
as soon as its state is reached, and fails after WAIT seconds."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq_normmatters.recipes.run import lock as run_lock

from test_iwslt14 import iwslt14  # noqa: F401  (the prepared tiny IWSLT14, a fixture)
from test_recipes import SCRIPTS, TINY_TRANSFORMER

WAIT = 600  # seconds at most for a state a test waits for
# trains far longer than any test waits: each test stops it; an update's loss logged each update
ENDLESS = [*TINY_TRANSFORMER, "--max-update", "100000", "--warmup-updates", "8", "--max-tokens", "2000",
           "--save-interval-updates", "1000", "--log-interval", "1", "--cpu", "--num-workers", "0"]
ENVIRONMENT = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


@pytest.fixture
def start():
    """start(*command): a script started in a session of its own; whatever is left of each
    session is killed after the test (by the session's pid: its trainers are in it too)."""
    sessions = []

    def started(*command) -> subprocess.Popen:
        sessions.append(subprocess.Popen([str(part) for part in command], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=ENVIRONMENT, start_new_session=True))
        return sessions[-1]
    yield started
    for process in sessions:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate()


def compare(prepared, out, *extra) -> list:
    return [SCRIPTS / "compare.sh", "iwslt14", prepared, out, "--seeds", "1", "--configs", "transformer_l1", *extra,
            "--", *ENDLESS]


def updates(save_dir: Path) -> list:
    """The update numbers of train.log's per-update records, in the order logged."""
    log = save_dir / "train.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    return [int(json.loads(line)["num_updates"]) for line in text.splitlines()
            if line.startswith('{"epoch"') and '"num_updates"' in line and '"loss"' in line]


def wait_for(state, what: str):
    deadline = time.monotonic() + WAIT
    while not (found := state()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {WAIT} s: {what}")
        time.sleep(0.2)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def holder_pid(save_dir: Path) -> int:
    return int(re.match(r"pid (\d+) on ", (save_dir / "run.lock").read_text())[1])


def test_a_killed_compare_leaves_one_trainer_and_the_next_resumes_where_it_saved(iwslt14, tmp_path, start):  # noqa: F811
    """compare.sh killed (SIGKILL: nothing can pass a signal on) mid-training: its trainer goes on
    holding the run folder, and a second compare.sh is refused naming it, writing nothing; the
    trainer stopped by SIGTERM saves at the end of its update; a third compare.sh resumes from
    that update and, stopped by SIGTERM to compare.sh itself, passes the signal on: the trainer
    saves and ends, compare.sh exits 75 with one line. No update is logged twice."""
    _, prepared = iwslt14
    out = tmp_path / "out"
    save_dir = out / "transformer_l1-seed1"
    first = start(*compare(prepared, out))
    wait_for(lambda: len(updates(save_dir)) >= 3, "three updates of the first compare.sh")
    first.send_signal(signal.SIGKILL)
    first.wait()
    trainer = holder_pid(save_dir)
    assert trainer != first.pid and alive(trainer), "the trainer holds the run folder after its starter died"
    recorded = (save_dir / "run.json").read_bytes()

    second = subprocess.run([str(part) for part in compare(prepared, out)], capture_output=True, text=True,
                            env=ENVIRONMENT, timeout=WAIT)
    assert second.returncode == 1
    assert f"transformer_l1-seed1: pid {trainer} on {os.uname().nodename}, since " in second.stderr
    assert "nothing was started" in second.stderr and (save_dir / "run.json").read_bytes() == recorded

    os.kill(trainer, signal.SIGTERM)
    wait_for(lambda: not alive(trainer), "the trainer's end after SIGTERM")
    log = (save_dir / "compare.log").read_text()
    saved = int(re.search(r"SIGTERM: stopped at the end of update (\d+), its state saved in ", log)[1])

    third = start(*compare(prepared, out))
    wait_for(lambda: len(updates(save_dir)) and updates(save_dir)[-1] >= saved + 2, "two updates after the resume")
    assert re.search(rf"Loaded checkpoint \S+checkpoint_last.pt \(epoch \d+ @ {saved} updates\)",
                     (save_dir / "compare.log").read_text())
    third.send_signal(signal.SIGTERM)
    _, errors = third.communicate(timeout=WAIT)
    assert third.returncode == 75, errors
    assert errors.strip().splitlines() == [errors.strip()] and errors.startswith(
        "compare.sh: transformer_l1-seed1 stopped on a signal, its state saved at the end of an update")
    assert re.search(r"SIGTERM: stopped at the end of update \d+, its state saved in ",
                     (save_dir / "compare.log").read_text().split("Loaded checkpoint")[-1])
    assert run_lock.holder(save_dir) is None, "the trainer ended with compare.sh"
    logged = updates(save_dir)
    assert logged == sorted(set(logged)) and logged[0] == 1, "each update logged once, in order"


def test_sigterm_to_the_train_script_saves_and_its_rerun_resumes_at_that_update(iwslt14, tmp_path, start):  # noqa: F811
    """train_wmt14.sh trains in the process it starts (run.lock names it): a second trainer on
    the folder is refused naming it; SIGTERM saves at the end of the update and exits 75 with
    one line; the same command resumes at that update. With --no-last-checkpoints the line says
    that nothing was saved."""
    _, prepared = iwslt14
    save_dir = tmp_path / "run"
    command = [SCRIPTS / "train_wmt14.sh", "transformer_l1", prepared, save_dir, *ENDLESS]
    training = start(*command)
    wait_for(lambda: len(updates(save_dir)) >= 3, "three updates of train_wmt14.sh")
    assert holder_pid(save_dir) == training.pid
    refused = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=ENVIRONMENT,
                             timeout=WAIT)
    assert refused.returncode == 1 and f"is being trained by another process (pid {training.pid} on " in \
        refused.stderr
    training.send_signal(signal.SIGTERM)
    output, errors = training.communicate(timeout=WAIT)
    assert training.returncode == 75, errors[-2000:]
    saved = int(re.search(r"\[one_run\] SIGTERM: stopped at the end of update (\d+), its state saved in "
                          rf"{save_dir}/checkpoint_last.pt; the same command resumes from there", output)[1])

    resumed = start(*command, "--no-last-checkpoints")
    wait_for(lambda: updates(save_dir)[-1] >= saved + 2, "two updates after the resume")
    resumed.send_signal(signal.SIGTERM)
    output, errors = resumed.communicate(timeout=WAIT)
    assert f"(epoch 1 @ {saved} updates)" in output or f"@ {saved} updates)" in output
    assert resumed.returncode == 75 and re.search(
        r"SIGTERM: stopped at the end of update \d+, its state NOT saved \(--no-last-checkpoints\)", output)
    logged = updates(save_dir)
    assert logged == sorted(set(logged)), "each update logged once, in order"
