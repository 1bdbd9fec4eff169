"""Training killed mid-run and resumed from its last checkpoint continues exactly as if never stopped."""

import re
import signal
import subprocess
import time

import pytest

from cli import BIN, SUBPROCESS_ENV, TINY_TRANSFORMER, TRAINING, USER_DIR, preprocess, write_parallel_text

UPDATES = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return preprocess(write_parallel_text(root / "raw"), root / "bin")


def command(data, save_dir, arch, updates=UPDATES):
    return [str(BIN / "fairseq-train"), str(data), "--user-dir", USER_DIR, "--arch", arch,
            "--save-dir", str(save_dir), *TINY_TRANSFORMER, *TRAINING, "--dropout", "0.1",
            "--max-tokens", "500", "--max-update", str(updates), "--save-interval-updates", "4",
            "--no-epoch-checkpoints", "--disable-validation", "--log-interval", "1"]


def losses_by_update(log):
    return {int(u): float(loss) for loss, u in
            re.findall(r"\| train_inner \|[^\n]*? loss=([\d.]+),[^\n]*?num_updates=(\d+)", log)}


def kill_after_checkpoint(cmd, save_dir, name):
    """Start training, SIGKILL it once `name` has been written; returns the update it resumes from."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=SUBPROCESS_ENV)
    deadline = time.time() + 240
    while not (save_dir / name).exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (save_dir / name).exists(), "training ended before the checkpoint to kill after"


@pytest.mark.parametrize("arch", ["norm_transformer_l1_iwslt_de_en", "norm_transformer_bwn_iwslt_de_en"])
def test_killed_and_resumed_run_matches_uninterrupted_run(data, tmp_path, arch):
    reference = subprocess.run(command(data, tmp_path / "reference", arch), capture_output=True, text=True,
                              env=SUBPROCESS_ENV)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = losses_by_update(reference.stdout)
    assert len(expected) == UPDATES

    save_dir = tmp_path / "killed"
    kill_after_checkpoint(command(data, save_dir, arch), save_dir, "checkpoint_1_8.pt")
    resumed = subprocess.run(command(data, save_dir, arch), capture_output=True, text=True,
                              env=SUBPROCESS_ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(re.search(r"Loaded checkpoint .*?\(epoch \d+ @ (\d+) updates\)", resumed.stdout).group(1))
    assert 4 <= start < UPDATES  # checkpoint_last.pt is the update-4 or a later one, never truncated
    after = losses_by_update(resumed.stdout)
    assert sorted(after) == list(range(start + 1, UPDATES + 1))
    assert after == pytest.approx({u: expected[u] for u in after}, abs=1e-3)


def test_truncated_checkpoint_gives_one_clear_error_and_touches_nothing(data, tmp_path):
    arch = "norm_transformer_l1_iwslt_de_en"
    first = subprocess.run(command(data, tmp_path, arch, updates=8), capture_output=True, text=True,
                              env=SUBPROCESS_ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:20000])
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
    resumed = subprocess.run(command(data, tmp_path, arch), capture_output=True, text=True,
                              env=SUBPROCESS_ENV)
    assert resumed.returncode != 0
    message = resumed.stderr.strip().splitlines()[-1]
    assert f"checkpoint {last} cannot be read" in message and "truncated or corrupt" in message
    assert "checkpoint_1_8.pt" in message and "--restore-file" in message
    assert before == {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}


def test_checkpoint_last_is_replaced_atomically(tmp_path, monkeypatch):
    """A crash while fairseq copies the new checkpoint over checkpoint_last.pt leaves the old one."""
    from fairseq import checkpoint_utils
    last, new = tmp_path / "checkpoint_last.pt", tmp_path / "checkpoint_1_8.pt"
    last.write_bytes(b"old complete checkpoint")
    new.write_bytes(b"new complete checkpoint")

    def crash_midway(src, dst):
        with open(dst, "wb") as f:
            f.write(open(src, "rb").read()[:5])
        raise KeyboardInterrupt("killed during the copy")

    monkeypatch.setattr("shutil.copyfile", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_utils.PathManager.copy(str(new), str(last), overwrite=True)
    assert last.read_bytes() == b"old complete checkpoint"
    monkeypatch.undo()
    assert checkpoint_utils.PathManager.copy(str(new), str(last), overwrite=True)
    assert last.read_bytes() == b"new complete checkpoint"


def test_resuming_with_another_norm_type_is_refused_and_touches_nothing(data, tmp_path):
    first = subprocess.run(command(data, tmp_path, "norm_transformer_iwslt_de_en", updates=4),
                           capture_output=True, text=True, env=SUBPROCESS_ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
    resumed = subprocess.run(command(data, tmp_path, "norm_transformer_l1_iwslt_de_en", updates=8),
                             capture_output=True, text=True, env=SUBPROCESS_ENV)
    assert resumed.returncode != 0
    # fairseq re-raises it as "Cannot load model parameters ...", chained below our message
    assert "trained with other normalization flags (" in resumed.stderr
    assert "--norm-type l2 in the checkpoint but l1 now" in resumed.stderr
    assert "--restore-file CHECKPOINT --reset-optimizer" in resumed.stderr
    assert before == {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
