"""A full disk loses nothing and says so (docs/reliability.md): every writer of the package on a
real full disk, a small tmpfs mounted for the test (the write fails with ENOSPC, as on a full
scratch disk): one error naming the file and the space, no partial file, the earlier file intact."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from fairseq_normmatters.recipes.common import RecipeError, write_text_atomically
from test_recipes import DEMO

KB = 1024


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(kilobytes): a tmpfs of that size mounted under tmp_path (unmounted after)."""
    mounted = []

    def mount(kilobytes: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"a full disk needs a tmpfs, which this machine does not let the tests mount (mount: "
                        f"{result.stderr.strip()}; run as root with CAP_SYS_ADMIN)")
        mounted.append(point)
        return point
    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


def nothing_partial(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name or ".partial" in p.name]


def german_text(lines: int) -> str:
    return "\n".join((DEMO / "train.de").read_text(encoding="utf-8").splitlines()[:lines]) + "\n"


def test_a_record_or_table_on_a_full_disk_keeps_the_old_one(small_disk):
    disk = small_disk(64)
    table = disk / "results.md"
    table.write_text("the table before\n")
    with pytest.raises(RecipeError, match=rf"writing {table} failed \(OSError: \[Errno 28\] No space left on "
                                          r"device\); 0.0 GB free on its disk; nothing of it was kept"):
        write_text_atomically(table, "x" * (200 * KB))
    assert table.read_text() == "the table before\n"
    nothing_partial(disk)


def test_prepared_text_on_a_full_disk_keeps_both_sides_as_they_were(small_disk):
    """Both sides of a split are replaced together or not at all (the English side fits, the
    German does not)."""
    from fairseq_normmatters.recipes.data.prepare import write_pairs
    disk = small_disk(64)
    for lang in ("de", "en"):
        (disk / f"valid.{lang}").write_text(f"valid {lang} before\n")
    pairs = [("ein langer deutscher Satz " * 40, "short")] * 200
    with pytest.raises(RecipeError, match=rf"writing {disk}/valid.de, {disk}/valid.en failed .*No space left"):
        write_pairs(disk / "valid", [pairs[:100], pairs[100:]])
    assert [(disk / f"valid.{lang}").read_text() for lang in ("de", "en")] == ["valid de before\n", "valid en before\n"]
    nothing_partial(disk)


def test_binarized_data_on_a_full_disk_leaves_no_part(small_disk, tmp_path):
    from fairseq_normmatters.recipes.data.binarize import preprocess
    text = tmp_path / "spm"
    text.mkdir()
    for lang in ("de", "en"):
        (text / f"train.{lang}").write_text(german_text(3000), encoding="utf-8")
    disk = small_disk(128)
    with pytest.raises(RecipeError, match=r"writing .*/train.de-en.de.bin, .*/train.de-en.de.idx failed .*No space"):
        preprocess(text, disk, "de", "en", ["train"], workers=1)
    assert sorted(p.name for p in disk.iterdir()) == ["dict.de.txt", "dict.en.txt"]


def test_a_sentencepiece_model_on_a_full_disk_is_not_kept(small_disk, tmp_path):
    """sentencepiece writes a part of its model on a full disk without a word: the part does
    not load, and neither it nor a vocabulary is left as spm.model / spm.vocab."""
    from fairseq_normmatters.recipes.data.prepare import train_sentencepiece
    corpus = tmp_path / "train.de"
    corpus.write_text(german_text(3000), encoding="utf-8")
    disk = small_disk(64)
    (disk / "filler").write_bytes(b"\0" * (60 * KB))
    with pytest.raises(RecipeError, match=rf"writing {disk}/spm.model, {disk}/spm.vocab failed"):
        train_sentencepiece([corpus], disk, 2000, 100000)
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_a_checkpoint_copy_on_a_full_disk_keeps_the_old_checkpoint(small_disk, tmp_path):
    """fairseq copies its newest checkpoint over checkpoint_last.pt / checkpoint_best.pt: on a
    full disk the old one stays whole and the error says how much the copy needs."""
    import fairseq_normmatters
    from fairseq import checkpoint_utils
    from fairseq_normmatters.fairseq_plugin.checkpoint import CheckpointSaveError
    fairseq_normmatters.install_fairseq_plugin()
    newest = tmp_path / "checkpoint_3_300.pt"
    torch.save({"weights": torch.zeros(300_000)}, newest)
    disk = small_disk(256)
    best = disk / "checkpoint_best.pt"
    torch.save({"weights": torch.ones(10)}, best)
    with pytest.raises(CheckpointSaveError, match=rf"checkpoint {best} could not be saved \(OSError: \[Errno 28\] "
                       r"No space left on device: .*\): 0 MB were written before it failed and are removed; 0 MB "
                       r"are free there; the copy needs 1 MB\. The checkpoints saved before are intact "
                       r"\(checkpoint_best.pt\)"):
        checkpoint_utils.PathManager.copy(str(newest), str(best), overwrite=True)
    assert torch.equal(torch.load(best, weights_only=True)["weights"], torch.ones(10))
    nothing_partial(disk)
    assert os.listdir(disk) == ["checkpoint_best.pt"]
