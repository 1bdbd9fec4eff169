"""Every bad input gets one clear line, before anything is written (docs/reliability.md): through
the real scripts, each refusal in its own process."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from test_recipes import DEMO, SCRIPTS, TINY_VOCABULARY, make_wmt14_raw

ENVIRONMENT = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


def run(*command, env=None, check_status=1):
    """The script's result; it exited `check_status` with one line on stderr (no traceback)."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            env={**ENVIRONMENT, **(env or {})}, timeout=600)
    assert result.returncode == check_status, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def plain_corpus(raw, lines=200, **replaced):
    """A plain corpus (SPLIT.de / SPLIT.en) from the demo's text; `replaced` maps a file name to
    its text instead."""
    raw.mkdir()
    demo = {lang: (DEMO / f"train.{lang}").read_text(encoding="utf-8").splitlines() for lang in ("de", "en")}
    for split, start in (("train", 0), ("valid", lines), ("test", lines + 40)):
        for lang in ("de", "en"):
            name = f"{split}.{lang}"
            count = lines if split == "train" else 40
            text = "\n".join(demo[lang][start:start + count]) + "\n"
            (raw / name).write_text(replaced.get(name, text), encoding="utf-8")
    return raw


def prepare(raw, out, *options, check_status=1):
    return run(SCRIPTS / "prepare_wmt14_de_en.sh", "--raw-dir", raw, *TINY_VOCABULARY, "--workers", "1", *options,
               out, check_status=check_status)


@pytest.mark.parametrize("empty", ["train.de", "test.en"])
def test_an_empty_split_is_refused(tmp_path, empty):
    split = empty.split(".")[0]
    raw = plain_corpus(tmp_path / "raw", **{f"{split}.de": "", f"{split}.en": ""})
    line = prepare(raw, tmp_path / "out")
    assert line == (f"prepare_wmt14_de_en.sh: error: the {split} split is empty (0 pairs read from {raw}): there is "
                    "nothing to train or evaluate on; check RAW")


def test_a_split_the_cleaning_empties_is_refused_with_the_filters_numbers(tmp_path):
    raw = plain_corpus(tmp_path / "raw")
    line = prepare(raw, tmp_path / "out", "--max-len", "1")
    assert line == ("prepare_wmt14_de_en.sh: error: the cleaning kept 0 of the 200 training pairs (1-1 pieces a "
                    "side, length ratio at most 4.0): loosen --max-len or --max-ratio")


@pytest.mark.parametrize("option, value, least", [("--vocab-size", "0", "16"), ("--max-ratio", "0.5", "1"),
                                                  ("--max-len", "0", "1"), ("--workers", "0", "1")])
def test_an_impossible_setting_is_refused_before_anything_is_written(tmp_path, option, value, least):
    out = tmp_path / "out"
    result = subprocess.run([str(SCRIPTS / "prepare_wmt14_de_en.sh"), "--raw-dir", str(tmp_path), option, value,
                             str(out)], capture_output=True, text=True, env=ENVIRONMENT, timeout=600)
    assert result.returncode == 2 and result.stderr.strip().endswith(
        f"prepare_wmt14_de_en.sh: error: {option} {value}: needs at least {least}")
    assert not out.exists()


def test_the_same_file_on_both_sides_is_refused(tmp_path):
    raw = plain_corpus(tmp_path / "raw")
    (raw / "train.en").unlink()
    (raw / "train.en").symlink_to(raw / "train.de")
    assert prepare(raw, tmp_path / "out") == (f"prepare_wmt14_de_en.sh: error: {raw}/train.de and {raw}/train.en are "
                                              "the same file: the German and the English side of a corpus must be "
                                              "two files")


@pytest.mark.parametrize("problem", ["a file", "under a file"])
def test_an_output_that_cannot_be_a_directory_is_refused(tmp_path, problem):
    raw = plain_corpus(tmp_path / "raw")
    (tmp_path / "file").write_text("kept\n")
    out = tmp_path / "file" if problem == "a file" else tmp_path / "file" / "out"
    expected = (f"{out} is a file, not a directory: nothing was written" if problem == "a file" else
                f"cannot create the output directory {out} (Not a directory): nothing was written")
    assert expected in prepare(raw, out)
    assert (tmp_path / "file").read_text() == "kept\n"


def test_sigterm_to_prepare_exits_130_with_one_line_and_leaves_no_part(tmp_path):
    """SIGTERM (a killed job) as Ctrl-C: one line, exit 130, no temporary left. Deterministic:
    the first training file is a named pipe that nothing writes, so prepare waits there, with
    the training split's temporaries open, until the signal comes."""
    raw = make_wmt14_raw(tmp_path / "raw")
    os.mkfifo(raw / "europarl-v7.de-en.de")
    out = tmp_path / "out"
    process = subprocess.Popen([str(SCRIPTS / "prepare_wmt14_de_en.sh"), "--raw-dir", str(raw), *TINY_VOCABULARY,
                                "--workers", "1", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENVIRONMENT)
    try:
        assert process.stdout.readline().startswith("[prepare] reading ")
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=600)
    finally:
        process.kill()
        process.wait()
    assert (process.returncode, errors.strip()) == (130, (
        "prepare_wmt14_de_en.sh: interrupted; every file it writes is written whole or not at all, so rerunning the "
        "same command redoes what was not finished"))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def minimal_prepared(tmp_path):
    """The files evaluate.sh checks before it loads a checkpoint: a source dictionary and the test reference."""
    prepared = tmp_path / "prepared"
    for name in ("bin/dict.de.txt", "raw/test.en"):
        (prepared / name).parent.mkdir(parents=True, exist_ok=True)
        (prepared / name).write_text("a 1\n")
    return prepared


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip", b"not a checkpoint"])
def test_evaluate_names_a_truncated_or_foreign_checkpoint(tmp_path, content):
    save = tmp_path / "run"
    save.mkdir()
    (save / "checkpoint_last.pt").write_bytes(content)
    prepared = minimal_prepared(tmp_path)
    line = run(SCRIPTS / "evaluate.sh", save, prepared, "--cpu")
    assert line.startswith(f"evaluate.sh: error: checkpoint {save}/checkpoint_last.pt cannot be loaded (") and \
        "it is truncated, corrupt or not a checkpoint: nothing was written" in line
    assert sorted(p.name for p in save.iterdir()) == ["checkpoint_last.pt"]


def test_a_checkpoint_without_fairseqs_record_is_named(tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    torch.save({"model": {}}, save / "checkpoint_last.pt")
    prepared = minimal_prepared(tmp_path)
    assert run(SCRIPTS / "evaluate.sh", save, prepared, "--cpu") == (
        f"evaluate.sh: error: {save}/checkpoint_last.pt is not a fairseq checkpoint (it holds no optimizer_history): "
        f"move it out of {save}, or evaluate another run")


@pytest.mark.parametrize("variable, value, expected", [
    ("NORMMATTERS_NORM_BACKEND", "bogus", "norm backend 'bogus' is unknown; allowed: auto, eager, native, compiled, "
                                          "triton (set by set_backend() or $NORMMATTERS_NORM_BACKEND)"),
    ("NORMMATTERS_STRICT_BACKENDS", "yes", "$NORMMATTERS_STRICT_BACKENDS='yes': allowed 0 (fall back, the default) "
                                           "or 1 (raise)")])
def test_an_unknown_backend_setting_is_refused_by_the_scripts(tmp_path, variable, value, expected):
    line = run(SCRIPTS / "train_wmt14.sh", "transformer_l1", tmp_path / "prepared", tmp_path / "save",
               env={variable: value})
    assert line == f"train_wmt14.sh: error: {expected}"
    assert not (tmp_path / "save").exists()


@pytest.mark.parametrize("arguments, expected", [
    (["--kind", "l1", "--device", "bogus"], "error: --device 'bogus' is not a device torch knows; give cpu, cuda, ..."),
    (["--kind", "linf", "--shape", "4x1"], "error: the L1/L-inf/top-k scales need n >= 2 normalized features, got n=1"),
])
def test_the_path_command_refuses_what_no_norm_would_take(arguments, expected):
    result = subprocess.run([sys.executable, "-m", "fairseq_normmatters.kernels.path", *arguments], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2 and result.stderr.strip().endswith(expected)


def test_the_path_of_a_numbered_device_is_its_types():
    from fairseq_normmatters.kernels.path import main
    outputs = []
    for device in ("cuda", "cuda:7"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("builtins.print", outputs.append)
            main(["--kind", "l1", "--device", device])
    assert outputs[0] == outputs[1]
    assert outputs[0].endswith(("triton (auto's first choice on cuda)", "compiled (auto's first choice on cuda)"))
