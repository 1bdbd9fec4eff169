"""A run stopped anywhere and resumed from its last checkpoint continues exactly as if never stopped.

The stop is deterministic: a kill leaves the last checkpoint fairseq wrote as checkpoint_last.pt,
so each resume starts from a copy of one checkpoint of the uninterrupted run, named by the update
it was written at (600 toy pairs at --max-tokens 500 make 9 batches an epoch).
"""

import re
import shutil

import pytest
import torch

from cli import TINY_TRANSFORMER, TRAINING, USER_DIR, run

UPDATES = 24
UPDATES_PER_EPOCH = 9
MID_EPOCH_1, END_OF_EPOCH_1, MID_EPOCH_2 = "checkpoint_1_8.pt", "checkpoint1.pt", "checkpoint_2_12.pt"


def command(data, save_dir, arch, updates=UPDATES, epoch_checkpoints=False):
    """The arguments of fairseq-train for a run of `updates` updates with a checkpoint every 4."""
    training = [a for a in TRAINING if not (epoch_checkpoints and a == "--no-epoch-checkpoints")]
    return [str(data), "--user-dir", USER_DIR, "--arch", arch,
            "--save-dir", str(save_dir), *TINY_TRANSFORMER, *training, "--dropout", "0.1",
            "--max-tokens", "500", "--max-update", str(updates), "--save-interval-updates", "4",
            "--disable-validation", "--log-interval", "1"]


def losses_by_update(log):
    return {int(u): float(loss) for loss, u in
            re.findall(r"\| train_inner \|[^\n]*? loss=([\d.]+),[^\n]*?num_updates=(\d+)", log)}


def fairseq_train(arguments, check=True):
    """fairseq-train in this process (cli.run), as a stopped run is resumed: from the checkpoints
    on disk alone."""
    return run("fairseq-train", *arguments, check=check)


def train(arguments):
    return fairseq_train(arguments).stdout


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """arch -> (losses by update, folder with every interval and epoch checkpoint) of one run."""
    runs = {}

    def run(arch):
        if arch not in runs:
            save_dir = tmp_path_factory.mktemp(arch)
            losses = losses_by_update(train(command(data, save_dir, arch, epoch_checkpoints=True)))
            assert sorted(losses) == list(range(1, UPDATES + 1))
            runs[arch] = losses, save_dir
        return runs[arch]
    return run


@pytest.mark.parametrize("arch, checkpoint, epoch, update", [
    ("norm_transformer_l1_iwslt_de_en", MID_EPOCH_1, 1, 8),
    ("norm_transformer_l1_iwslt_de_en", END_OF_EPOCH_1, 2, UPDATES_PER_EPOCH),
    ("norm_transformer_l1_iwslt_de_en", MID_EPOCH_2, 2, 12),
    ("norm_transformer_bwn_iwslt_de_en", END_OF_EPOCH_1, 2, UPDATES_PER_EPOCH),
])
def test_resumed_run_matches_uninterrupted_run(data, uninterrupted, tmp_path, arch, checkpoint, epoch, update):
    expected, checkpoints = uninterrupted(arch)
    shutil.copyfile(checkpoints / checkpoint, tmp_path / "checkpoint_last.pt")
    log = train(command(data, tmp_path, arch))
    assert f"checkpoint_last.pt (epoch {epoch} @ {update} updates)" in log
    after = losses_by_update(log)
    assert sorted(after) == list(range(update + 1, UPDATES + 1))
    assert after == pytest.approx({u: expected[u] for u in after}, abs=1e-3)


def test_truncated_checkpoint_gives_one_clear_error_and_touches_nothing(data, tmp_path):
    arch = "norm_transformer_l1_iwslt_de_en"
    fairseq_train(command(data, tmp_path, arch, updates=8))
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:20000])
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
    resumed = fairseq_train(command(data, tmp_path, arch), check=False)
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


def test_failed_checkpoint_save_names_the_file_and_space_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """A full disk: torch.save writes part of the file, then fails ("file write failed")."""
    from fairseq import checkpoint_utils

    from fairseq_normmatters.fairseq_plugin.checkpoint import CheckpointSaveError
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(b"old complete checkpoint")

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"x" * 3_000_000)
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    monkeypatch.setattr(checkpoint_utils.time, "sleep", lambda seconds: None)  # fairseq's retries
    with pytest.raises(CheckpointSaveError) as raised:
        checkpoint_utils.torch_persistent_save({"model": {}}, str(tmp_path / "checkpoint_2_12.pt"))
    message = str(raised.value)
    assert f"checkpoint {tmp_path}/checkpoint_2_12.pt could not be saved (RuntimeError: " in message
    assert re.search(r"[1-9]\d* MB were written before it failed and are removed; \d+ MB are free there", message)
    assert "intact (checkpoint_last.pt)" in message and "rerun the same command to resume" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]
    assert last.read_bytes() == b"old complete checkpoint"


def test_resuming_with_another_norm_type_is_refused_and_touches_nothing(data, tmp_path):
    fairseq_train(command(data, tmp_path, "norm_transformer_iwslt_de_en", updates=4))
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
    resumed = fairseq_train(command(data, tmp_path, "norm_transformer_l1_iwslt_de_en", updates=8), check=False)
    assert resumed.returncode != 0
    # fairseq re-raises it as "Cannot load model parameters ...", chained below our message
    assert "trained with other normalization flags (" in resumed.stderr
    assert "--norm-type l2 in the checkpoint but l1 now" in resumed.stderr
    assert "--restore-file CHECKPOINT --reset-optimizer" in resumed.stderr
    assert before == {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
