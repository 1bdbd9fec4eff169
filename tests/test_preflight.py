"""compare.sh --preflight through the real CLI, at tiny sizes on the CPU: a configuration that
starts near a uniform guess passes, one built to start badly (a Transformer without norms from
fairseq's own initialization) is flagged before any run of the grid is trained."""

import math

import pytest

from fairseq_normmatters.recipes.run.preflight import Measured, table
from test_recipes import TINY_TRANSFORMER, prepared, script  # noqa: F401  (prepared: the fixture)

TINY = [*TINY_TRANSFORMER, "--max-tokens", "2000", "--update-freq", "1", "--cpu", "--num-workers", "0"]


@pytest.mark.long
def test_preflight_flags_a_configuration_that_starts_far_above_uniform(prepared, tmp_path):
    _, data = prepared
    out = tmp_path / "comparison"
    result = script("compare.sh", "wmt14", data, out, "--preflight", "--preflight-updates", "4", "--configs",
                    "transformer_l2", "transformer_none", "--", *TINY, "--init-scheme", "fairseq", check=False)
    assert result.returncode == 1, result.stderr
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in result.stdout.splitlines()
            if line.startswith("| transformer_")}
    vocabulary = 4 + len((data / "bin" / "dict.de.txt").read_text().splitlines())
    uniform = math.log2(vocabulary)
    assert float(rows["transformer_l2"][3]) == pytest.approx(uniform, abs=2.0) and rows["transformer_l2"][-1] == "ok |"
    assert float(rows["transformer_none"][2]) > uniform + 2
    assert rows["transformer_none"][-1].startswith("starts ") and "bits above uniform" in rows["transformer_none"][-1]
    assert rows["transformer_l2"][1] == "fp32" and "(of 100000 updates)" in rows["transformer_l2"][10]
    assert "compare.sh: error: preflight flagged 1 configuration(s): transformer_none (starts " in result.stderr
    assert (out / "preflight" / "preflight.md").read_text().startswith("| config | precision | first loss (bits) |")
    assert not list(out.glob("transformer_*-seed*"))  # no run of the grid was started
    assert not list((out / "preflight").rglob("checkpoint*.pt"))


def test_the_preflight_flags_a_collapsing_loss_scale_and_a_divergence_and_projects_the_grid():
    def measured(config, scales=(), diverged=None, ups=2.0, first=14.0):
        return Measured(config, "amp", first, 15.0, 9.0, scales, 3, 1e5, ups, 20.0, 100000,
                        100000 / ups / 3600, diverged)
    assert measured("ok", (128.0, 64.0)).flags() == []
    assert measured("bad", (128.0, 2.0)).flags() == ["loss scale collapsed (128 -> 2)"]
    assert measured("nan", diverged="gradients are Nan/Inf").flags() == ["diverged (gradients are Nan/Inf)"]
    assert measured("high", first=17.5).flags() == ["starts 2.5 bits above uniform"]
    text = table([measured("a", ups=2.0), measured("b", ups=1.0)], seeds=3)
    assert "| a | amp | 14.00 | 15.00 | 9.00 | — | 3 | 100000 | 2.000 | 20.00 | 13.9 (of 100000 updates) | ok |" in text
    assert "Projected for the grid (2 configurations x 3 seeds at their budgets): 125.0 hours of training on devices " \
           "like this one (GPU-hours on a GPU)" in text
