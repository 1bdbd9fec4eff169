"""IWSLT14 de-en from an archive of the distributed layout, and the whole comparison in one
command: prepare -> compare.sh (train x seeds -> evaluate -> collect), on tiny data."""

import dataclasses
import json

import pytest

from test_recipes import DEMO, TINY_TRANSFORMER, add_to_tgz, script

TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
             "IWSLT14.TED.tst2012")


def lines(lang, start, count):
    return (DEMO / f"train.{lang}").read_text(encoding="utf-8").splitlines()[start:start + count]


# Kept by fairseq's cleaning, which counts Moses tokens (6 and 8: ratio 1.33), dropped by a count
# of whitespace words (1 and 4); and the reverse (1 and 1 words; 2 and 10 tokens)
MOSES_KEEPS = {"de": "Eins,zwei,drei.", "en": "One, two, three, four."}
MOSES_DROPS = {"de": "Ja!", "en": "Yes,yes,yes,yes,yes!"}


def train_tags(lang):
    """Two talks, each with the metadata lines of the real file around its sentences."""
    talks = []
    for talk, start in ((1, 0), (2, 230)):
        talks += [f"<url>http://www.ted.com/talks/talk{talk}.html</url>", f"<keywords>talks, {lang}</keywords>",
                  f"<talkid>{talk}</talkid>", f"<title>Title {talk} {lang}</title>",
                  f"<description>About talk {talk} in {lang}</description>", *lines(lang, start, 230)]
    return "\n".join(talks + [MOSES_DROPS[lang], MOSES_KEEPS[lang]]) + "\n"


def xml(name, lang, start, count):
    segs = "".join(f'<seg id="{i + 1}"> {line} </seg>\n' for i, line in enumerate(lines(lang, start, count)))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<refset setid="{name}" srclang="de" trglang="en">\n'
            f'<doc docid="1" genre="lectures">\n<talkid>1</talkid>\n{segs}</doc>\n</refset>\n</mteval>\n')


@pytest.fixture(scope="session")  # not module: the long tests run first (conftest.py), the rest later
def iwslt14(tmp_path_factory):
    """(raw dir with de-en.tgz, prepared OUT)."""
    root = tmp_path_factory.mktemp("iwslt14")
    raw = root / "raw"
    raw.mkdir()
    members = {f"de-en/train.tags.de-en.{lang}": train_tags(lang) for lang in ("de", "en")}
    for number, name in enumerate(TEST_SETS):
        for lang in ("de", "en"):
            members[f"de-en/{name}.de-en.{lang}.xml"] = xml(name, lang, 1000 + 12 * number, 12)
    add_to_tgz(raw / "de-en.tgz", members)
    out = root / "prepared"
    script("prepare_iwslt14_de_en.sh", "--raw-dir", raw, "--vocab-size", "300", "--workers", "1", out)
    return raw, out


def test_prepare_makes_the_split_that_users_compare_against(iwslt14):
    _, out = iwslt14
    read = lambda name: (out / "raw" / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    kept = ["Title 1 de", "About talk 1 in de", *lines("de", 0, 230), "Title 2 de", "About talk 2 in de",
            *lines("de", 230, 230), MOSES_KEEPS["de"]]  # cleaned on Moses tokens, as fairseq's script
    assert read("valid.de") == kept[22::23]  # every 23rd pair, the metadata lines <url> ... gone
    assert read("train.de") == [line for i, line in enumerate(kept) if (i + 1) % 23]
    assert not any("<" in line for line in read("train.de") + read("train.en"))
    assert read("test.en") == [line for n in range(5) for line in lines("en", 1000 + 12 * n, 12)]
    assert (out / "bin" / "dict.de.txt").is_file() and json.loads((out / "prepare.json").read_text())["status"] == "done"


def test_prepare_names_a_missing_test_set(iwslt14, tmp_path):
    raw, _ = iwslt14
    result = script("prepare_iwslt14_de_en.sh", "--raw-dir", tmp_path, tmp_path / "out", check=False)
    assert result.returncode == 1
    assert "missing IWSLT14 file train.tags.de-en.de: looked at" in result.stderr and "de-en.tgz" in result.stderr


@pytest.mark.long
def test_compare_trains_every_config_and_seed_then_tabulates_the_differences(iwslt14, tmp_path):
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    schedule = lambda updates: [*TINY_TRANSFORMER, "--max-update", str(updates), "--warmup-updates", "8",  # noqa: E731
                                "--max-tokens", "2000", "--cpu", "--num-workers", "0"]
    short = schedule(16)
    first = script("compare.sh", "iwslt14", prepared, out, "--seeds", "2", "--configs", "transformer_l2",
                   "transformer_l1", "--parallel", "2", "--", *short)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "transformer_l1-seed1", "transformer_l1-seed2", "transformer_l2-seed1", "transformer_l2-seed2"]
    results = json.loads((out / "transformer_l1-seed2" / "results.json").read_text())
    assert (results["benchmark"], results["seed"], results["config"]) == ("iwslt14", 2, "transformer_l1")
    assert 0 <= results["bleu_lowercase"] <= 100
    table = (out / "results.md").read_text()
    assert "| transformer_l1 | 1, 2 |" in table and " ± " in table
    assert "seed 1: " in table and "seed 2: " in table and "(p " in table  # paired bootstrap per seed
    row = next(line for line in table.splitlines() if line.startswith("| transformer_l2-seed1 | transformer_l2 | 1 |"))
    assert row.endswith("| — | — |")  # the paper's numbers are WMT14's: none beside IWSLT14 runs
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    again = script("compare.sh", "iwslt14", prepared, out, "--seeds", "2", "--configs", "transformer_l2",
                   "transformer_l1", "--", *short)
    assert again.stdout.count("done before") == 4 and (out / "results.md").read_text() == table
    # the screen: one line as each run starts and ends, then where the table is; the logs are whole
    screen = first.stdout.splitlines()
    for number, run in enumerate(["transformer_l2-seed1", "transformer_l1-seed1", "transformer_l2-seed2",
                                  "transformer_l1-seed2"], 1):
        assert sum(line.startswith(f"[compare] {number}/4 {run}: training, batch the CPU x 2000 tokens x 1 = 2000 "
                                   "tokens an update (") for line in screen) == 1
        assert sum(line.startswith(f"[compare] {number}/4 {run}: done in ") and ", BLEU " in line
                   for line in screen) == 1
        log = (out / run / "compare.log").read_text()
        assert "== training: " in log and "== evaluation: " in log and "[evaluate] transformer_" in log
        assert " | INFO | fairseq_cli.train | " in log  # fairseq-train's own log lines, as its script writes them
    assert "left)" in "\n".join(screen[2:])  # an estimate once a run has ended
    assert len(screen) == 10 and screen[-2].startswith("[compare] done in ")
    assert screen[-2].endswith(f"table {out / 'results.md'}, curves {out / 'curves.png'}")
    # every run ran its whole schedule of 16 updates (past its warm-up of 8) and was still learning: the screen
    # and the table compare them at that budget, and say how much each still fell
    assert screen[-1].startswith("[compare] every run ran its whole schedule; 4 of 4 were still improving at its end "
                                 "(transformer_l2-seed1 (")
    assert "the differences compare the models at this budget, at 16 updates, as papers compare them" in screen[-1]
    assert "| at budget: transformer_l1-seed1 (" in table and "| at budget, still improving, " in table
    results = json.loads((out / "transformer_l1-seed1" / "results.json").read_text())
    assert results["averaged"]["last_update"] == results["num_updates"] == 16 and results["training"]["still_learning"]
    # evaluated: the checkpoints that neither the average nor a resume needs are gone
    kept = sorted(p.name for p in (out / "transformer_l1-seed1").glob("checkpoint*.pt"))
    assert kept == sorted({*results["checkpoints_averaged"], "checkpoint_last.pt", "checkpoint_avg.pt"})
    assert "[evaluate] removed " in (out / "transformer_l1-seed1" / "compare.log").read_text()

    # another schedule in the same OUT: refused before anything is trained, the difference named
    changed = script("compare.sh", "iwslt14", prepared, out, "--seeds", "2", "--configs", "transformer_l2",
                     "transformer_l1", "--", *schedule(20), check=False)
    assert changed.returncode == 1 and "4 run(s) in " in changed.stderr
    assert "transformer_l2-seed1: --max-update 16 -> --max-update 20" in changed.stderr
    assert "use another OUT for the new command, or add --retrain" in changed.stderr
    assert (out / "results.md").read_text() == table and "training" not in changed.stdout


def test_a_failing_run_shows_its_log_tail_and_starts_no_more_runs(iwslt14, tmp_path):
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    failed = script("compare.sh", "iwslt14", prepared, out, "--seeds", "2", "--configs", "transformer_l2",
                    "--", "--max-tokens", "many", check=False)
    assert failed.returncode == 1
    log = out / "transformer_l2-seed1" / "compare.log"
    assert f"training transformer_l2-seed1 exited with 2; the last lines of {log}:" in failed.stderr
    assert "--max-tokens: invalid" in failed.stderr and "rerun the same compare.sh command" in failed.stderr
    assert not (out / "transformer_l2-seed2").exists() and not (out / "results.md").exists()


@pytest.mark.parametrize("parallel, gpus, cores, expected", [
    (1, 0, 2, [{}]),
    (2, 0, 2, [{"OMP_NUM_THREADS": "1"}] * 2),
    (3, 0, 16, [{"OMP_NUM_THREADS": "5"}] * 3),
    (2, 4, 16, [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]),
    (3, 8, 16, [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}, {"CUDA_VISIBLE_DEVICES": "4,5"}]),
])
def test_parallel_runs_share_the_cores_or_the_gpus(monkeypatch, parallel, gpus, cores, expected):
    from fairseq_normmatters.recipes.launch.local import machine_shares
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    shares = machine_shares(parallel, gpus, cores)
    assert [share.environment for share in shares] == expected
    assert all(share.gpus == (gpus // parallel) for share in shares)


def test_iwslt14_runs_take_one_gpu_each(monkeypatch):
    from fairseq_normmatters.recipes.launch.local import machine_shares
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    shares = machine_shares(2, 8, 16, per_run=1)
    assert [(s.environment, s.gpus) for s in shares] == [({"CUDA_VISIBLE_DEVICES": "0"}, 1),
                                                         ({"CUDA_VISIBLE_DEVICES": "1"}, 1)]


def test_parallel_beyond_the_gpus_is_refused(monkeypatch):
    from fairseq_normmatters.recipes.common import RecipeError
    from fairseq_normmatters.recipes.launch.local import machine_shares
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert [s.environment for s in machine_shares(2, 2, 8)] == [{"CUDA_VISIBLE_DEVICES": "3"},
                                                                  {"CUDA_VISIBLE_DEVICES": "5"}]
    with pytest.raises(RecipeError, match="--parallel 3 needs at least 3 GPUs; 2 are visible"):
        machine_shares(3, 2, 8)


def test_compare_names_an_unknown_configuration_before_training(capsys, tmp_path):
    from fairseq_normmatters.recipes import compare
    with pytest.raises(SystemExit) as exit_:
        compare.parse_args(["iwslt14", str(tmp_path), str(tmp_path / "out"), "--configs", "transformer_l3"])
    assert exit_.value.code == 2
    assert "unknown configuration transformer_l3 for iwslt14; known: transformer_l2, transformer_l1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_half_prepared_iwslt14_directory_names_its_own_prepare_script(iwslt14, tmp_path):
    from fairseq_normmatters.recipes.common import RecipeError, check_not_half_prepared
    _, out = iwslt14
    marker = json.loads((out / "prepare.json").read_text())
    assert marker["script"] == "prepare_iwslt14_de_en.sh"
    (tmp_path / "prepare.json").write_text(json.dumps({**marker, "status": "in progress"}))
    with pytest.raises(RecipeError, match="rerun scripts/prepare_iwslt14_de_en.sh with the same arguments first"):
        check_not_half_prepared(tmp_path)


def test_retrain_moves_aside_only_the_runs_of_another_experiment(iwslt14, tmp_path, capsys):
    from fairseq_normmatters.recipes.common import RecipeError
    from fairseq_normmatters.recipes.compare import parse_args
    from fairseq_normmatters.recipes.run.runs import Run, check_commands
    from fairseq_normmatters.recipes.run.command import start_run
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    runs = [Run(1, "transformer_l2", 1, out / "transformer_l2-seed1"), Run(2, "transformer_l1", 1, out / "transformer_l1-seed1")]
    for run, updates in zip(runs, ("16", "20")):
        start_run(run.config, prepared, run.save_dir, ["--max-update", updates, "--seed", "1"], 0, "iwslt14")
        (run.save_dir / "results.json").write_text("{}")
    args = parse_args(["iwslt14", str(prepared), str(out), "--seeds", "1", "--", "--max-update", "20"])
    with pytest.raises(RecipeError, match="(?s)1 run\\(s\\) in .* transformer_l2-seed1: --max-update 16 -> --max-update 20"
                                          ".*nothing was trained or moved"):
        check_commands(runs, args, 0)
    assert all(run.save_dir.is_dir() for run in runs)
    args = dataclasses.replace(args, retrain=True)  # the settings are frozen: a new value
    check_commands(runs, args, 0)
    moved = next(out.glob("transformer_l2-seed1.replaced-*"))
    assert f"--retrain: moved {runs[0].save_dir} aside to {moved} (kept whole; --max-update 16 -> --max-update 20)" \
        in capsys.readouterr().out
    assert (moved / "results.json").is_file() and (moved / "run.json").is_file()
    assert not runs[0].save_dir.exists() and (runs[1].save_dir / "results.json").is_file()


def test_a_run_is_the_same_experiment_after_a_move_of_its_data_or_another_split_of_its_batch(iwslt14, tmp_path,
                                                                                             capsys):
    """What decides the result is compared: the data by content, the batch by its tokens, every
    other flag; a precision given for one configuration leaves the other's runs valid."""
    import shutil
    from fairseq_normmatters.recipes.common import RecipeError
    from fairseq_normmatters.recipes.compare import parse_args
    from fairseq_normmatters.recipes.run.runs import Run, check_commands
    from fairseq_normmatters.recipes.run.command import start_run
    _, prepared = iwslt14
    out, moved = tmp_path / "comparison", tmp_path / "moved" / "prepared"
    runs = [Run(1, "transformer_l2", 1, out / "transformer_l2-seed1"), Run(2, "transformer_bwn", 1, out / "transformer_bwn-seed1")]
    for run in runs:
        start_run(run.config, prepared, run.save_dir, ["--max-tokens", "2000", "--update-freq", "2", "--seed", "1"], 0,
                  "iwslt14")
        (run.save_dir / "checkpoint_last.pt").write_bytes(b"")
    shutil.copytree(prepared, moved)
    same = ["iwslt14", str(moved), str(out), "--seeds", "1", "--configs", "transformer_l2", "transformer_bwn"]
    check_commands(runs, parse_args([*same, "--", "--max-tokens", "4000", "--update-freq", "1"]), 0)
    assert capsys.readouterr().out.count("resumes under the CPU x 2000 tokens x 2 -> the CPU x 4000 tokens x 1, "
                                         "the same 4000 tokens an update") == 2
    with pytest.raises(RecipeError, match=r"(?s)transformer_l2-seed1: the batch of an update \(4000 -> 3000 tokens\)"):
        check_commands(runs, parse_args([*same, "--", "--max-tokens", "3000"]), 0)
    with pytest.raises(RecipeError, match=r"(?s)1 run\(s\).*transformer_bwn-seed1: \(nothing\) -> --autocast-bf16"):
        check_commands(runs, parse_args([*same, "--precision", "transformer_bwn=bf16", "--",
                                         "--max-tokens", "2000", "--update-freq", "2"]), 0)
    (moved / "bin" / "dict.de.txt").write_text("other 1\n")
    with pytest.raises(RecipeError, match=r"(?s)2 run\(s\).*: the prepared data \(fingerprint \w+ -> \w+: prepare.json"):
        check_commands(runs, parse_args([*same, "--", "--max-tokens", "2000", "--update-freq", "2"]), 0)


def test_the_precision_options_name_what_they_apply_to(capsys, tmp_path, monkeypatch):
    from fairseq_normmatters.recipes.compare import parse_args
    base = ["iwslt14", str(tmp_path), str(tmp_path / "out"), "--configs", "transformer_l2", "transformer_bwn"]
    args = parse_args([*base, "--precision", "fp32", "--precision", "transformer_bwn=bf16"])
    assert args.precisions == {"transformer_l2": "fp32", "transformer_bwn": "bf16"}
    for options, message in ((["--precision", "lstm_bwn=fp32"], "--precision lstm_bwn=fp32: lstm_bwn is not among "
                                                                 "the configurations run (transformer_l2, transformer_bwn)"),
                             (["--precision", "transformer_l2=fp8"], "'fp8' is not a precision; allowed: fp16, amp, "
                                                                     "bf16, fp32")):
        with pytest.raises(SystemExit):
            parse_args([*base, *options])
        assert message in capsys.readouterr().err
    monkeypatch.setenv("PRECISION", "fp16")
    with pytest.raises(SystemExit):
        parse_args(base)
    assert "PRECISION=fp16: compare.sh takes --precision [CONFIG=]P" in capsys.readouterr().err


def test_runs_that_diverge_are_counted_as_diverged_and_the_comparison_completes(iwslt14, tmp_path):
    """A learning rate of 1e30 makes the gradients NaN within a few updates: fairseq raises
    FloatingPointError (then its NanDetector fails in turn); each run's results.json says where
    it diverged, the tables and the verdict say so, and a rerun counts them as done."""
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    options = ["iwslt14", prepared, out, "--seeds", "1", "--configs", "transformer_l2", "transformer_l1", "--",
               *TINY_TRANSFORMER, "--max-update", "8", "--lr", "1e30", "--max-tokens", "2000", "--cpu",
               "--num-workers", "0"]
    result = script("compare.sh", *options)
    screen, table = result.stdout.splitlines(), (out / "results.md").read_text()
    where = []
    for number, run in enumerate(["transformer_l2-seed1", "transformer_l1-seed1"], 1):
        results = json.loads((out / run / "results.json").read_text())
        update = results["diverged"]["update"]
        assert results["diverged"]["reason"] == "gradients are Nan/Inf" and "bleu" not in results and 1 < update < 8
        assert sum(line.startswith(f"[compare] {number}/2 {run}: done in ") and
                   f", diverged at update {update} (gradients are Nan/Inf)" in line for line in screen) == 1
        assert f"| {run} | {run.split('-')[0]} | 1 | CPU x 2000 x 1 | fp32 | {update} | — | diverged at update {update} |" in table
        assert f"| seed 1 at update {update} | " in table
        where.append(f"{run} at update {update}")
    assert "| transformer_l1 | 1 | — | — |" in table  # no BLEU, so no difference either
    assert screen[-1] == f"[compare] all 2 runs diverged ({', '.join(where)}): there are no scores to compare"
    assert script("compare.sh", *options).stdout.count("done before") == 2

