"""Bad input from outside: a hostile checkpoint is refused by every path that loads checkpoints
and nothing in it runs; a missing or wrong data directory and a checkpoint trained on other
dictionaries each give one error naming what is wrong, and nothing is written."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq import checkpoint_utils
from fairseq_normmatters.fairseq_plugin.data_dir import DataDirError, check_data_dirs

from cli import TINY_TRANSFORMER, USER_DIR, preprocess, run, train, write_parallel_text

REPO = Path(__file__).resolve().parent.parent


class RunsACommand:
    """Unpickling this calls open(sentinel, "w"): a stand-in for any code a pickle can run."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """(data, save dir) of an L1 Transformer trained for 5 updates."""
    root = tmp_path_factory.mktemp("trained")
    train(data, root / "save", "norm_transformer_l1_iwslt_de_en", *TINY_TRANSFORMER, updates=5)
    return data, root / "save"


@pytest.fixture(scope="module")
def hostile(trained, tmp_path_factory):
    """(data, save dir whose checkpoint_last.pt is hostile, hostile checkpoint, sentinel path)."""
    data, trained_save = trained
    root = tmp_path_factory.mktemp("hostile")
    save = shutil.copytree(trained_save, root / "save")
    sentinel = root / "payload-ran"
    state = torch.load(save / "checkpoint_last.pt")
    state["extra_state"]["note"] = RunsACommand(sentinel)
    torch.save(state, save / "checkpoint_last.pt")
    return data, save, save / "checkpoint_last.pt", sentinel


def assert_refused(result, sentinel):
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Unsupported global: GLOBAL io.open" in output, output[-2000:]  # builtins.open is io.open
    assert "add_safe_globals" in output  # torch says how to allow it deliberately
    assert not sentinel.exists(), "the pickled payload ran"


@pytest.mark.parametrize("tool", ["fairseq-generate", "fairseq-validate"])
def test_evaluation_tools_refuse(hostile, tool):
    data, _, checkpoint, sentinel = hostile
    extra = ["--task", "translation"] if tool == "fairseq-validate" else []
    result = run(tool, data, *extra, "--user-dir", USER_DIR, "--path", checkpoint, "--cpu",
                 "--max-tokens", "2000", check=False)
    assert_refused(result, sentinel)


def test_restore_file_refuses(hostile, tmp_path):
    data, _, checkpoint, sentinel = hostile
    result = train(data, tmp_path, "norm_transformer_l1_iwslt_de_en", *TINY_TRANSFORMER,
                   "--restore-file", checkpoint, updates=10, check=False)
    assert_refused(result, sentinel)


def test_evaluate_script_refuses(hostile, tmp_path):
    data, save, _, sentinel = hostile
    prepared = tmp_path / "prepared"
    (prepared / "raw").mkdir(parents=True)
    shutil.copytree(data, prepared / "bin")
    (prepared / "raw" / "test.en").write_text("x\n")
    result = subprocess.run([str(REPO / "scripts" / "evaluate.sh"), str(save), str(prepared), "--cpu"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                 "NORMMATTERS_PYTHON": sys.executable})
    assert_refused(result, sentinel)


def contents(folder):
    """Every file under `folder` with its bytes."""
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def last_line(result):
    assert result.returncode != 0
    return result.stderr.strip().splitlines()[-1]


EXPECTED = "expected a directory made by fairseq-preprocess holding dict.{}.txt and dict.{}.txt"
DATA_DIR_ERROR = "fairseq_normmatters.fairseq_plugin.data_dir.DataDirError: data directory "


def test_train_names_a_missing_data_dir_and_touches_the_checkpoints_not(trained, tmp_path):
    save = shutil.copytree(trained[1], tmp_path / "save")  # a run to resume: fairseq-train would load it
    before = contents(save)
    result = train(tmp_path / "missing", save, "norm_transformer_l1_iwslt_de_en", *TINY_TRANSFORMER, check=False)
    assert last_line(result) == f"{DATA_DIR_ERROR}{tmp_path / 'missing'} does not exist; {EXPECTED.format('SRC', 'TGT')}"
    assert contents(save) == before


def raw_text(data, tmp_path):
    return write_parallel_text(tmp_path / "raw", splits=(("test", 3),))


def only_source_dictionary(data, tmp_path):
    (tmp_path / "half").mkdir()
    shutil.copy(data / "dict.de.txt", tmp_path / "half")
    return tmp_path / "half"


@pytest.mark.parametrize("make_dir,problem", [
    (lambda data, tmp_path: tmp_path / "missing", "does not exist"),
    (raw_text, "lacks dict.de.txt and dict.en.txt (it holds no dict.*.txt file)"),
    (only_source_dictionary, "lacks dict.en.txt (its dictionary files: dict.de.txt)"),
], ids=["missing", "raw-text", "no-target-dictionary"])
def test_generate_names_a_wrong_data_dir(trained, tmp_path, make_dir, problem):
    data, save = trained
    wrong = make_dir(data, tmp_path)
    result = run("fairseq-generate", wrong, "--source-lang", "de", "--target-lang", "en", "--user-dir", USER_DIR,
                 "--path", save / "checkpoint_last.pt", "--cpu", "--max-tokens", "2000", check=False)
    assert last_line(result) == f"{DATA_DIR_ERROR}{wrong} {problem}; {EXPECTED.format('de', 'en')}"


def test_data_dir_check_names_files_shards_and_unknown_languages(trained, tmp_path):
    data, _ = trained
    with pytest.raises(DataDirError, match=f"data directory {data}/dict.de.txt is a file, not a directory"):
        check_data_dirs(f"{data}/dict.de.txt", "de", "en")
    with pytest.raises(DataDirError, match=f"data directory {tmp_path}/shard2 does not exist"):
        check_data_dirs(f"{data}:{tmp_path}/shard2")
    with pytest.raises(DataDirError, match="holds no file named SPLIT.SRC-TGT.LANG.bin to infer the languages from "
                                           r"\(it holds no dict.\*.txt file\).*or give --source-lang and --target-lang"):
        check_data_dirs(str(tmp_path))
    check_data_dirs(str(data))  # languages inferred from the binarized files, as fairseq does


@pytest.fixture(scope="module")
def other_dictionaries(tmp_path_factory):
    """Data directories whose dictionaries differ from `trained`'s: same size, and smaller."""
    root = tmp_path_factory.mktemp("other-dictionaries")
    return {"same-size": preprocess(write_parallel_text(root / "raw-a", seed=5), root / "same-size"),
            "other-size": preprocess(write_parallel_text(root / "raw-b", vocab_size=30), root / "other-size")}


@pytest.mark.parametrize("case,difference", [
    ("same-size", "same size (88 symbols) but other symbols"),
    ("other-size", "88 symbols in the checkpoint but 64 now"),
])
def test_generate_refuses_a_checkpoint_trained_on_other_dictionaries(trained, other_dictionaries, case, difference):
    data, save = trained
    other = other_dictionaries[case]
    result = run("fairseq-generate", other, "--user-dir", USER_DIR, "--path", save / "checkpoint_last.pt",
                 "--cpu", "--max-tokens", "2000", check=False)
    assert last_line(result) == (
        f"ValueError: the dictionaries of data directory {other} are not the ones this checkpoint was trained with: "
        f"source dictionary: {difference}; target dictionary: {difference}. Use the data directory the model "
        f"was trained on ({data}), or data binarized with its dictionaries (fairseq-preprocess --srcdict/--tgtdict)")


def test_checkpoint_without_dictionary_fingerprint_still_loads(trained, other_dictionaries, tmp_path):
    """Checkpoints of earlier versions of the plugin hold the normalization flags only."""
    _, save = trained
    state = torch.load(save / "checkpoint_last.pt")
    del state["model"]["_extra_state"]["dictionaries"]
    torch.save(state, tmp_path / "old.pt")
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(tmp_path / "old.pt")], arg_overrides={"data": str(other_dictionaries["same-size"])})
    assert models[0].dictionaries["data"] == str(other_dictionaries["same-size"])
