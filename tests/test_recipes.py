"""The WMT14 recipe scripts on a tiny WMT-shaped raw directory, through their shell entry points."""

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fairseq_normmatters.recipes.common import read_lines
from fairseq_normmatters.recipes.run.command import command, device_flags
from fairseq_normmatters.recipes.run.configs import CONFIGS

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DEMO = REPO / "data" / "demo"
TINY_TRANSFORMER = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
                    "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
TINY_LSTM = ["--encoder-embed-dim", "32", "--encoder-hidden-size", "32", "--decoder-embed-dim", "32",
             "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32"]
SHORT = ["--max-update", "35", "--warmup-updates", "10", "--lr", "0.005", "--update-freq", "1",
         "--max-tokens", "2000", "--save-interval-updates", "10", "--keep-interval-updates", "3",
         "--no-epoch-checkpoints", "--validate-interval-updates", "10", "--cpu", "--num-workers", "0"]


def script(name, *args, check=True):
    launcher = [sys.executable] if name.endswith(".py") else []
    result = subprocess.run([*launcher, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def demo_lines(split, lang, start, count):
    return (DEMO / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[start:start + count]


def sgm(lines, lang):
    segments = "".join(f'<seg id="{i + 1}">{line.replace("&", "&amp;")}</seg>\n' for i, line in enumerate(lines))
    return f'<srcset setid="newstest2014" srclang="any">\n<doc docid="1" genre="news" origlang="{lang}">\n' \
           f"{segments}</doc>\n</srcset>\n"


def add_to_tgz(archive: Path, members: dict):
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def with_separators(lines):
    """Reference lines as released ones can be: one holding U+2028, one a form feed (str.splitlines()
    splits at both; fairseq, Moses and sacreBLEU do not)."""
    return [line.replace(" ", "\u2028", 1) if i == 3 else line.replace(" ", "\f", 1) if i == 7 else line
            for i, line in enumerate(lines)]


def make_wmt14_raw(raw: Path):
    """The official archive and file names; europarl, nc and test as archives, the rest extracted."""
    raw.mkdir()
    text = lambda split, lang, start, count: "\n".join(demo_lines(split, lang, start, count)) + "\n"  # noqa: E731
    add_to_tgz(raw / "training-parallel-europarl-v7.tgz",
               {f"training/europarl-v7.de-en.{lang}": text("train", lang, 0, 600) for lang in ("de", "en")})
    add_to_tgz(raw / "training-parallel-nc-v9.tgz",
               {f"training/news-commentary-v9.de-en.{lang}": text("train", lang, 600, 600) for lang in ("de", "en")})
    for lang in ("de", "en"):
        (raw / f"commoncrawl.de-en.{lang}").write_text(text("train", lang, 1200, 600) + "\n", encoding="utf-8")
        (raw / "dev").mkdir(exist_ok=True)
        (raw / "dev" / f"newstest2013.{lang}").write_text(text("valid", lang, 0, 40), encoding="utf-8")
    add_to_tgz(raw / "test-full.tgz", {
        "test-full/newstest2014-deen-src.de.sgm": sgm(demo_lines("test", "de", 0, 30), "de"),
        "test-full/newstest2014-deen-ref.en.sgm": sgm(with_separators(demo_lines("test", "en", 0, 30)), "de"),
        "test-full/newstest2014-deen-src.en.sgm": sgm(demo_lines("test", "en", 0, 30), "de"),
        "test-full/newstest2014-deen-ref.de.sgm": sgm(demo_lines("test", "de", 0, 30), "de")})
    return raw


# A 300-piece vocabulary cuts German into about twice as many pieces as English: a piece ratio
# of 1.5 would drop a fifth of the pairs, so the tests' limit is wider
TINY_VOCABULARY = ["--vocab-size", "300", "--max-ratio", "4"]


@pytest.fixture(scope="session")  # not module: the long tests run first (conftest.py), the rest later
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("wmt14")
    raw = make_wmt14_raw(root / "raw")
    out = root / "prepared"
    script("prepare_wmt14_de_en.sh", "--raw-dir", raw, *TINY_VOCABULARY, "--workers", "1", out)
    return raw, out


def test_prepare_outputs_and_is_idempotent(prepared):
    raw, out = prepared
    assert (out / "bin" / "dict.de.txt").is_file() and (out / "spm" / "spm.model").is_file()
    train_de = (out / "raw" / "train.de").read_text().splitlines()
    assert len(train_de) == 1800  # the empty line after commoncrawl is cleaned away
    assert read_lines(out / "raw" / "test.en") == with_separators(demo_lines("test", "en", 0, 30))
    assert len((out / "raw" / "test.en").read_text().splitlines()) == 32, "the reference holds two separators"
    assert len((out / "raw" / "valid.de").read_text().splitlines()) == 40
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = script("prepare_wmt14_de_en.sh", "--raw-dir", raw, *TINY_VOCABULARY, out)
    assert "already prepared" in again.stdout
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*")}


def test_the_test_source_is_cleaned_as_training_and_the_reference_left_as_released(tmp_path):
    """newstest2014's German source with „ “ – (which the normalized training text never holds):
    prepare normalizes the source as it does the training text, so it encodes with no <unk>, and
    says so; the English reference keeps its curly quotes for sacreBLEU."""
    raw = make_wmt14_raw(tmp_path / "raw")
    for lang in ("de", "en"):  # quotes and dashes in the training text, as WMT14's has them
        quoted = [f'"{line.replace(" ", " - ", 1)}"' for line in demo_lines("train", lang, 1200, 600)]
        (raw / f"commoncrawl.de-en.{lang}").write_text("\n".join(quoted) + "\n", encoding="utf-8")
    source = [f"„{line.replace(' ', ' – ', 1)}“" for line in demo_lines("test", "de", 0, 30)]
    reference = [f"“{line}”" for line in demo_lines("test", "en", 0, 30)]
    add_to_tgz(raw / "test-full.tgz", {"test-full/newstest2014-deen-src.de.sgm": sgm(source, "de"),
                                       "test-full/newstest2014-deen-ref.en.sgm": sgm(reference, "de")})
    out = tmp_path / "prepared"
    screen = script("prepare_wmt14_de_en.sh", "--raw-dir", raw, *TINY_VOCABULARY, "--workers", "1", out).stdout
    training = (out / "raw" / "train.de").read_text(encoding="utf-8")
    assert not {"„", "“", "–"} & set(training)  # these would be <unk> had the source stayed as released
    from fairseq_normmatters.recipes.data.prepare import normalize
    cleaned = (out / "raw" / "test.de").read_text(encoding="utf-8").splitlines()
    assert cleaned == [normalize(line, "de") for line in source] and not {"„", "“", "–"} & set("".join(cleaned))
    assert (out / "raw" / "test.en").read_text(encoding="utf-8").splitlines() == reference
    assert "[prepare] test: 30 pairs read, de normalized" in screen
    import sentencepiece
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(out / "spm" / "spm.model"))
    known = {line.split()[0] for line in (out / "bin" / "dict.de.txt").read_text(encoding="utf-8").splitlines()}
    as_released = [piece for line in source for piece in pieces.encode(line, out_type=str)]
    assert sum(piece not in known for piece in as_released) >= 60  # „ and “ at least: the fault mended
    unknown = json.loads((out / "prepare.json").read_text())["unknown_tokens"]
    assert unknown["test"]["de"][0] == 0 and unknown["test"]["de"][1] > 30 * 5
    assert f"[prepare] <unk> in the source (de): train 0.000% (0 of {unknown['train']['de'][1]} pieces), valid " \
           f"0.000% (0 of {unknown['valid']['de'][1]} pieces), test 0.000% (0 of {unknown['test']['de'][1]} pieces)" \
        in screen


def test_prepare_refuses_foreign_output_and_writes_nothing(prepared, tmp_path):
    raw, _ = prepared
    (tmp_path / "precious.txt").write_text("keep me")
    result = script("prepare_wmt14_de_en.sh", "--raw-dir", raw, tmp_path, check=False)
    assert result.returncode == 1
    assert f"{tmp_path} is not empty and was not made by this script" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


def test_prepare_interrupted_says_so_in_one_line_and_the_rerun_completes(prepared, tmp_path, monkeypatch, capsys):
    """Ctrl-C while sentencepiece trains: the raw files are whole, prepare.json says in progress,
    and the same command prepares OUT as an uninterrupted run does."""
    from fairseq_normmatters.recipes.common import run_main
    from fairseq_normmatters.recipes.data import prepare
    raw, reference = prepared
    out = tmp_path / "out"
    argv = ["--raw-dir", str(raw), *TINY_VOCABULARY, "--workers", "1", str(out)]

    def ctrl_c(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare, "train_sentencepiece", ctrl_c)
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: prepare.main(argv), "prepare_wmt14_de_en.sh")
    assert stopped.value.code == 130
    assert capsys.readouterr().err.startswith("prepare_wmt14_de_en.sh: interrupted; every file it writes is written whole")
    assert json.loads((out / "prepare.json").read_text())["status"] == "in progress"
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    prepare.main(argv)
    assert json.loads((out / "prepare.json").read_text())["status"] == "done"
    for name in ("raw/train.de", "spm/test.en", "bin/dict.en.txt"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_train_and_evaluate_refuse_a_half_prepared_directory(prepared, tmp_path):
    _, out = prepared
    half = shutil.copytree(out, tmp_path / "half")
    (half / "prepare.json").write_text(json.dumps({"status": "in progress", "settings": {}}))
    for result in (script("train_wmt14.sh", "transformer_l1", half, tmp_path / "save", check=False),
                   script("evaluate.sh", tmp_path / "save", half, check=False)):
        assert result.returncode == 1
        assert f"{half} is half prepared ({half}/prepare.json says the preparation did not finish): rerun " \
               "scripts/prepare_wmt14_de_en.sh with the same arguments first" in result.stderr
    assert not (tmp_path / "save").exists()


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path):
    from fairseq_normmatters.recipes.common import RecipeError, write_atomically
    results = tmp_path / "results.json"
    results.write_text("old")

    def disk_full(temporary):
        temporary.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(RecipeError, match=rf"writing {results} failed \(OSError: \[Errno 28\] No space left on "
                                          r"device\); \d+\.\d GB free on its disk"):
        write_atomically(results, disk_full)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"] and results.read_text() == "old"


def test_collect_plot_without_matplotlib_says_what_to_install_and_writes_nothing(tmp_path, monkeypatch):
    from fairseq_normmatters.recipes.common import RecipeError
    from fairseq_normmatters.recipes.report import collect
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(RecipeError, match=r"--plot needs matplotlib, which is not installed: pip install matplotlib"):
        collect.main([str(tmp_path), "--out", str(tmp_path / "results.md"), "--plot", str(tmp_path / "curves.png")])
    assert list(tmp_path.iterdir()) == []


def test_prepare_names_a_missing_file_and_where_it_looked(prepared, tmp_path):
    raw, _ = prepared
    partial = tmp_path / "raw"
    partial.mkdir()
    for name in ("training-parallel-europarl-v7.tgz", "training-parallel-nc-v9.tgz", "test-full.tgz", "dev"):
        (partial / name).symlink_to(raw / name)
    result = script("prepare_wmt14_de_en.sh", "--raw-dir", partial, tmp_path / "out", check=False)
    assert result.returncode == 1
    assert "missing WMT14 file commoncrawl.de-en.de: looked at" in result.stderr
    assert "training-parallel-commoncrawl.tgz" in result.stderr


@pytest.mark.long
@pytest.mark.parametrize("config,model", [("lstm_bwn", TINY_LSTM)])  # Transformers: test_iwslt14.py's compare
def test_train_evaluate_collect(prepared, tmp_path, config, model):
    _, out = prepared
    save = tmp_path / config
    script("train_wmt14.sh", config, out, save, *model, *SHORT)
    assert json.loads((save / "run.json").read_text())["config"] == config
    evaluated = script("evaluate.sh", save, out, "--average", "3", "--cpu")
    assert "BLEU" in evaluated.stdout
    results = json.loads((save / "results.json").read_text())
    assert {"config", "bleu", "sacrebleu_signature", "bleu_tok", "valid_ppl", "test_ppl",
            "checkpoints_averaged", "averaged", "training"} <= set(results)
    # the final state (update 35) is only in checkpoint_last.pt: the average ends with it, and
    # reaches back only as far as the validation losses allow (20 and 30 are interval checkpoints)
    averaged = results["averaged"]
    assert results["checkpoints_averaged"][-1] == "checkpoint_last.pt" and averaged["last_update"] == 35
    assert averaged["first_update"] in (20, 30, 35) and averaged["asked"] == 3
    assert (averaged["first_update"] == 20) == (averaged["narrowed"] == "")
    assert results["direction"] == "de-en" and "Moses-tokenized English" in results["bleu_tok_method"]
    assert results["valid_ppl"] > 1 and results["test_ppl"] > 1 and 0 <= results["bleu"] <= 100
    assert "nrefs:1|case:mixed" in results["sacrebleu_signature"]
    assert len((save / "test.hyp").read_text().splitlines()) == 30

    collected = script("collect_results.py", save, "--out", tmp_path / "results.md", "--plot", tmp_path / "curves.png")
    table = (tmp_path / "results.md").read_text()
    assert f"| {config} | {config} |" in table and collected.stdout.startswith("| run |")
    assert ("21.2" in table) if config == "lstm_bwn" else ("5.2" in table)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_config_lists_the_known_ones(prepared, tmp_path):
    _, out = prepared
    result = script("train_wmt14.sh", "transformer_l3", out, tmp_path / "save", check=False)
    assert result.returncode == 1
    assert "unknown CONFIG 'transformer_l3'; known: " + ", ".join(CONFIGS) in result.stderr


def test_collect_names_a_missing_results_file(tmp_path):
    result = script("collect_results.py", tmp_path, check=False)
    assert result.returncode == 1 and f"{tmp_path}/results.json is missing" in result.stderr


def test_device_flags_make_the_reference_batch():
    assert device_flags(0, "fp16") == ["--cpu", "--max-tokens", "4096", "--update-freq", "8"]
    assert device_flags(2, "fp16") == ["--max-tokens", "4096", "--update-freq", "4", "--fp16"]
    assert device_flags(8, "amp") == ["--max-tokens", "4096", "--update-freq", "1", "--amp"]
    assert device_flags(1, "bf16") == ["--max-tokens", "4096", "--update-freq", "8", "--autocast-bf16"]
    assert device_flags(0, "bf16") == ["--cpu", "--max-tokens", "4096", "--update-freq", "8", "--autocast-bf16"]
    assert device_flags(8, "fp32", world_size=16) == ["--max-tokens", "2048", "--update-freq", "1"]  # two nodes
    with pytest.raises(Exception, match="PRECISION='fp8' is not supported; allowed: fp16, amp, bf16, fp32"):
        device_flags(1, "fp8")


def test_every_configuration_trains_in_one_precision_by_default(prepared, tmp_path, monkeypatch):
    """The rows compared differ in their norms only: on GPUs every configuration (layer norm or
    none, Transformer or LSTM) gets bf16 autocast where the GPU has bf16, amp where it has not
    (bf16 where no GPU is visible: a login node building a GPU job's command); float32 on a CPU.
    fp16 only when asked."""
    import torch
    from fairseq_normmatters.recipes.run.command import precision_of
    _, out = prepared
    precision_flags = {"--fp16", "--amp", "--autocast-bf16"}

    def flags(config, gpus, precision=None):
        return [f for f in command(config, out, tmp_path, [], gpus=gpus, precision=precision) if f in precision_flags]
    assert {config: flags(config, 8) for config in CONFIGS} == {config: ["--autocast-bf16"] for config in CONFIGS}
    assert {precision_of(config, "wmt14", 0) for config in CONFIGS} == {"fp32"}
    assert all(flags(config, 0) == [] for config in CONFIGS)
    assert flags("transformer_l1", 8, "fp16") == ["--fp16"]
    assert precision_of("transformer_l2", "wmt14", 0, "bf16") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # a V100
    assert {config: flags(config, 8) for config in CONFIGS} == {config: ["--amp"] for config in CONFIGS}


# GPUs a node, nodes -> (--max-tokens, --update-freq): GPUs over all nodes x max-tokens x update-freq
# is 8 x 4096 = 32768 tokens, exactly where the count divides, within 4 tokens where it does not
WMT14_BATCHES = {(1, 1): (4096, 8), (1, 2): (4096, 4), (3, 1): (3641, 3), (3, 2): (2731, 2), (6, 1): (2731, 2),
                 (6, 2): (2731, 1), (8, 1): (4096, 1), (8, 2): (2048, 1), (16, 1): (2048, 1), (16, 2): (1024, 1)}


@pytest.mark.parametrize("gpus, nodes", sorted(WMT14_BATCHES))
def test_the_effective_batch_is_the_papers_on_any_gpu_count(prepared, tmp_path, gpus, nodes):
    from fairseq_normmatters.recipes.run.batch import effective_batch
    _, out = prepared
    extra = ["--distributed-world-size", str(gpus * nodes)] if nodes > 1 else []
    cmd = command("transformer_l2", out, tmp_path, extra, gpus=gpus)
    batch = effective_batch(cmd, gpus)
    assert (batch["max_tokens"], batch["update_freq"]) == WMT14_BATCHES[gpus, nodes]
    assert batch["gpus"] == gpus * nodes and abs(batch["tokens"] - 8 * 4096) <= 4


def test_a_batch_too_thin_to_share_is_refused_with_the_options():
    from fairseq_normmatters.recipes.run.command import batch_flags
    assert batch_flags(2, 1) == ["--max-tokens", "2048", "--update-freq", "1"]  # IWSLT14 on two GPUs
    with pytest.raises(Exception, match=r"8 GPUs would share the reference batch of 4096 tokens \(1 x 4096\) at 512 "
                                        r"tokens each, under the 1024 that a GPU needs; train each run on at most 4 "
                                        r"GPUs, or pass --max-tokens and --update-freq"):
        batch_flags(8, 1)


def test_no_silent_cpu_fallback_where_gpus_were_expected(prepared, tmp_path, monkeypatch):
    import torch
    from fairseq_normmatters.recipes.run.command import gpus_per_run
    _, out = prepared
    monkeypatch.setattr(torch.version, "cuda", "12.6")  # a CUDA build of torch that sees no GPU
    with pytest.raises(Exception, match=r"no GPU is visible \(torch .*, CUDA 12.6, CUDA_VISIBLE_DEVICES=.*\): check "
                                        r"the driver and CUDA_VISIBLE_DEVICES, or pass --cpu"):
        command("transformer_l2", out, tmp_path, [], gpus=0)
    assert "--cpu" in command("transformer_l2", out, tmp_path, ["--cpu"], gpus=0)
    assert (gpus_per_run("iwslt14", 8), gpus_per_run("wmt14", 8), gpus_per_run("iwslt14", 8, 2)) == (1, 8, 2)


def test_the_wmt14_recipe_checkpoints_its_tail_by_update(prepared, tmp_path):
    """Checkpoints (and validations) every 1000 of the 100k updates, the last 5 kept, no epoch
    checkpoints: the average covers the final 4000 updates and the final state."""
    _, out = prepared
    cmd = command("transformer_l2", out, tmp_path, [], gpus=8)
    flags = dict(zip(cmd, cmd[1:]))
    assert (flags["--save-interval-updates"], flags["--keep-interval-updates"], flags["--validate-interval-updates"],
            flags["--max-update"]) == ("1000", "5", "1000", "100000")
    assert "--no-epoch-checkpoints" in cmd and "--keep-last-epochs" not in cmd
    assert (flags["--source-lang"], flags["--target-lang"]) == ("de", "en")


def test_prepare_en_de_keeps_the_german_reference_and_trains_from_english(prepared, tmp_path):
    raw, _ = prepared
    out = tmp_path / "en_de"
    script("prepare_wmt14_de_en.sh", "--raw-dir", raw, *TINY_VOCABULARY, "--workers", "1",
           "--direction", "en-de", out)
    assert (out / "raw" / "test.de").read_text().splitlines() == demo_lines("test", "de", 0, 30)
    assert (out / "bin" / "train.en-de.en.bin").is_file() and not (out / "bin" / "train.de-en.de.bin").exists()
    cmd = command("transformer_l2", out, tmp_path / "save", [], gpus=1)
    assert cmd[cmd.index("--source-lang") + 1:cmd.index("--target-lang") + 2] == ["en", "--target-lang", "de"]
    again = script("prepare_wmt14_de_en.sh", "--raw-dir", raw, *TINY_VOCABULARY, out, check=False)
    assert again.returncode == 1 and "was prepared with other settings" in again.stderr  # de-en asked: refused


def test_extra_arguments_come_last(prepared, tmp_path):
    _, out = prepared
    cmd = command("transformer_bwn", out, tmp_path, ["--lr", "0.1"], gpus=1)
    assert cmd[-2:] == ["--lr", "0.1"] and "--autocast-bf16" in cmd and "norm_transformer_bwn_wmt_en_de" in cmd
