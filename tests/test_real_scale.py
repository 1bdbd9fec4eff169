"""The comparison as a real-scale run meets it, on tiny data through compare.sh: a run diverging
on several rank processes, and runs that survive a move of their data, another split of their
batch, and another configuration's precision (recipes/run/identity.py)."""

import json

import pytest

from test_iwslt14 import iwslt14  # noqa: F401  (the fixture: an IWSLT14 archive, prepared)
from test_recipes import TINY_TRANSFORMER, script


@pytest.mark.long
def test_a_run_diverging_on_two_rank_processes_is_reported_as_diverged(iwslt14, tmp_path):
    """Two CPU ranks, each its own process (one_run spawns them as fairseq spawns one a GPU): a
    rank's FloatingPointError reaches the parent as the text of torch's ProcessRaisedException.
    The run is diverged at its update, not failed."""
    _, prepared = iwslt14
    out = tmp_path / "comparison"
    result = script("compare.sh", "iwslt14", prepared, out, "--seeds", "1", "--configs", "transformer_l1", "--",
                    *TINY_TRANSFORMER, "--max-update", "8", "--lr", "1e30", "--max-tokens", "2000", "--cpu",
                    "--num-workers", "0", "--distributed-world-size", "2")
    results = json.loads((out / "transformer_l1-seed1" / "results.json").read_text())
    update = results["diverged"]["update"]
    assert results["diverged"]["reason"] == "gradients are Nan/Inf" and 1 < update < 8
    log = (out / "transformer_l1-seed1" / "compare.log").read_text()
    assert log.count("distributed init (rank ") == 2 and "spawn.py" in log  # the ranks' processes, ended by spawn
    assert result.stdout.splitlines()[-1].startswith("[compare] all 1 runs diverged (transformer_l1-seed1 at update")


@pytest.mark.long
def test_runs_survive_a_move_of_their_data_a_new_split_and_another_configurations_precision(iwslt14, tmp_path):
    """Through compare.sh: each run's precision in the table; a moved PREPARED and another split
    of the same batch keep the runs (an unfinished one resumes, and its record and the table say
    on what); --precision for one configuration moves only its runs aside and retrains them."""
    import shutil
    _, prepared = iwslt14
    moved, out = tmp_path / "elsewhere", tmp_path / "comparison"
    shutil.copytree(prepared, tmp_path / "prepared")
    tiny = [*TINY_TRANSFORMER, "--max-update", "6", "--cpu", "--num-workers", "0"]
    options = ["--seeds", "1", "--configs", "transformer_l2", "transformer_bwn"]
    script("compare.sh", "iwslt14", tmp_path / "prepared", out, *options, "--", *tiny, "--max-tokens", "2000",
           "--update-freq", "2")
    assert "| transformer_l2-seed1 | transformer_l2 | 1 | CPU x 2000 x 2 | fp32 | 6 |" in (out / "results.md").read_text()
    (tmp_path / "prepared").rename(moved)
    (out / "transformer_l2-seed1" / "results.json").unlink()  # as if stopped before its evaluation
    now = ["--precision", "transformer_bwn=bf16", "--", *tiny, "--max-tokens", "4000"]
    refused = script("compare.sh", "iwslt14", moved, out, *options, *now, check=False)
    assert refused.returncode == 1 and "1 run(s)" in refused.stderr and "transformer_bwn-seed1: (nothing) -> " \
        "--autocast-bf16" in refused.stderr and "transformer_l2-seed1" not in refused.stderr
    screen = script("compare.sh", "iwslt14", moved, out, *options, "--retrain", *now).stdout
    assert ("[compare] warning: transformer_l2-seed1 resumes under the CPU x 2000 tokens x 2 -> the CPU x 4000 tokens "
            "x 1, the same 4000 tokens an update") in screen and "done before" not in screen
    starts = json.loads((out / "transformer_l2-seed1" / "run.json").read_text())["starts"]
    assert [start["effective_batch"]["max_tokens"] for start in starts] == [2000, 4000]
    kept = next(out.glob("transformer_bwn-seed1.replaced-*"))
    assert f"moved {out / 'transformer_bwn-seed1'} aside to {kept}" in screen and (kept / "results.json").is_file()
    assert ("transformer_l2-seed1: began on the CPU x 2000 tokens x 2, resumed on the CPU x 4000 tokens x 1"
            in (out / "results.md").read_text())
    table = (out / "results.md").read_text()
    assert "| transformer_bwn-seed1 | transformer_bwn | 1 | CPU x 4000 x 1 | bf16 | 6 |" in table
