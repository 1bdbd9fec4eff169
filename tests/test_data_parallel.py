"""Two CPU processes (gloo, one per rank) train like one process with --update-freq 2.

fairseq's spawn launcher is GPU-only; on CPU each rank is its own fairseq-train process.
"""

import socket
import subprocess

import pytest

from cli import BIN, SUBPROCESS_ENV, TINY_TRANSFORMER, TRAINING, USER_DIR, losses_per_update, run

UPDATES = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arguments(data, arch, *extra):
    """fairseq-train's arguments for 8 updates without checkpoints."""
    return [str(data), "--user-dir", USER_DIR, "--arch", arch,
            *TINY_TRANSFORMER, *TRAINING, "--max-tokens", "500", "--max-update", str(UPDATES),
            "--no-save", "--disable-validation", "--log-interval", "1", *extra]


@pytest.mark.long
@pytest.mark.parametrize("arch", ["norm_transformer_l1_iwslt_de_en", "norm_transformer_bwn_iwslt_de_en"])
def test_two_gloo_ranks_match_one_process_with_update_freq_2(data, arch, tmp_path):
    env = SUBPROCESS_ENV
    init = f"tcp://127.0.0.1:{free_port()}"
    # each rank logs to a file: with pipes read one after the other, a rank whose unread pipe
    # fills would block, and with it the other rank's next collective
    outputs = [open(tmp_path / f"rank{r}.log", "w") for r in range(2)]
    ranks = [subprocess.Popen([str(BIN / "fairseq-train"),
                               *arguments(data, arch, "--distributed-world-size", "2", "--distributed-rank", str(r),
                                          "--distributed-no-spawn", "--distributed-init-method", init,
                                          "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
                                          "--device-id", "0")],
                              stdout=outputs[r], stderr=subprocess.STDOUT, env=env)
             for r in range(2)]
    for process, output in zip(ranks, outputs):
        process.wait(timeout=600)  # a guard against a hang, not a time limit of the test
        output.close()
    logs = [(tmp_path / f"rank{r}.log").read_text() for r in range(2)]
    assert [p.returncode for p in ranks] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    # the reference: one process (this one) with --update-freq 2
    single = run("fairseq-train", *arguments(data, arch, "--update-freq", "2"))
    parallel, serial = losses_per_update(logs[0]), losses_per_update(single.stdout)
    assert len(parallel) == len(serial) == UPDATES
    assert parallel == pytest.approx(serial, abs=0.01)
    assert serial[-1] < serial[0]
