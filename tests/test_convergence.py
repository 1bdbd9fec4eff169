"""The verdict's safeguards: a run's state of training, the converged-tail average, and BLEU as
papers of each direction compute it."""

import json
import math

import pytest
import torch

from fairseq_normmatters.recipes.common import RecipeError
from fairseq_normmatters.recipes.report.collect import comparison_table, paper_number, table
from fairseq_normmatters.recipes.report.verdict import verdict_line
from fairseq_normmatters.recipes.run.convergence import converged_tail, state_cell, training_state, validation_curve
from fairseq_normmatters.recipes.run.evaluate import checkpoints_to_average
from fairseq_normmatters.recipes.run.scoring import bleu_scores, tokenized_bleu

FALLING = [(u, 7.0 * 0.995 ** u + 1.3) for u in range(25, 251, 25)]  # the demo at 250 updates, shaped
FLAT = [(u, 1.42 + 0.003 * math.sin(u)) for u in range(25, 751, 25)]  # a plateau with noise
# WMT14's validation NLL as a power law to 100k updates: 2.73 bits at 10k, 2.23 at 100k
POWER_LAW = [(u, 2.0 + 73 * u ** -0.5) for u in range(1000, 100001, 1000)]


def test_a_still_falling_curve_is_marked_and_a_flat_one_is_not():
    falling, flat = training_state(FALLING), training_state(FLAT)
    assert falling["still_learning"] is True and falling["tail_fall_bits"] > 0.1
    assert flat["still_learning"] is False and abs(flat["tail_fall_bits"]) < 0.01 and flat["updates"] == 750
    assert training_state(FALLING[:1]) == {"updates": 25, "tail_fall_bits": None, "still_learning": None,
                                           "budget": None, "phase": None, "doubling_gain_bits": None}


def test_a_power_law_tail_at_100k_updates_is_still_learning_though_it_fell_under_2_percent():
    """The rule of relative falls of the label-smoothed loss (about 4 bits here) called it
    converged: 0.027 bits is 0.7% of it. In perplexity it is 1.9%, and doubling the run gains
    0.066 bits more."""
    state = training_state(POWER_LAW)
    assert state["still_learning"] is True and state["tail_fall_bits"] == pytest.approx(0.0272, abs=1e-4)
    assert state["tail_fall_bits"] / (state["tail_fall_bits"] + 4.0) < 0.02
    assert state_cell(state) == "early training, 0.0272 bits (1.90% of perplexity)"  # its schedule unknown
    assert state_cell(training_state(FLAT)).startswith("plateau, ")


def test_the_tail_fall_is_measured_from_the_last_validation_before_the_last_fifth():
    curve = [(100, 2.0), (700, 1.6), (799, 1.5), (1000, 1.2)]  # 80% of 1000 is 800: the 799 point
    assert training_state(curve)["tail_fall_bits"] == pytest.approx(1.5 - 1.2, abs=1e-4)


def test_the_curve_is_the_nll_not_the_label_smoothed_loss(tmp_path):
    lines = [json.dumps({"valid_loss": f"{ls:.3f}", "valid_nll_loss": f"{nll:.3f}", "valid_num_updates": str(u)})
             for u, ls, nll in ((800, 4.10, 2.30), (1000, 4.08, 2.25))]
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n")
    assert validation_curve(tmp_path) == [(800, 2.30), (1000, 2.25)]
    assert training_state(validation_curve(tmp_path))["still_learning"] is True  # 0.5% of the smoothed loss


def write_log(save_dir, curve):
    lines = [json.dumps({"epoch": 1, "valid_loss": f"{loss:.3f}", "valid_num_updates": str(u)}) for u, loss in curve]
    (save_dir / "train.log").write_text("\n".join(lines) + "\n")


def write_checkpoint(path, updates):
    torch.save({"model": {"w": torch.full((2,), float(updates))}, "optimizer_history": [{"num_updates": updates}]},
               path)


@pytest.fixture
def run_far_worse_early(tmp_path):
    """Checkpoints at 250, 500, 750 (interval) and 800 (checkpoint_last.pt only); validation
    NLL 5.0, 3.0, 1.52, 1.50: the two older ones far above the last."""
    write_log(tmp_path, [(250, 5.0), (500, 3.0), (750, 1.52), (800, 1.50)])
    for updates in (250, 500, 750):
        write_checkpoint(tmp_path / f"checkpoint_1_{updates}.pt", updates)
    write_checkpoint(tmp_path / "checkpoint_last.pt", 800)
    write_checkpoint(tmp_path / "checkpoint_best.pt", 800)
    return tmp_path


def test_the_average_stays_in_the_converged_tail_and_includes_the_final_state(run_far_worse_early):
    paths, averaged = checkpoints_to_average(run_far_worse_early, 5)
    assert [p.name for p in paths] == ["checkpoint_1_750.pt", "checkpoint_last.pt"]
    assert (averaged["first_update"], averaged["last_update"], averaged["checkpoints"], averaged["asked"]) == \
        (750, 800, 2, 5)
    assert ("update 500's validation NLL (3.000 bits) is more than 0.029 bits (2% of perplexity) above the last "
            "checkpoint's (1.500)") in averaged["narrowed"]
    paths, averaged = checkpoints_to_average(run_far_worse_early, 5, checked=False)
    assert len(paths) == 4 and averaged["narrowed"] == "" and not averaged["checked"]


def test_an_average_that_cannot_be_checked_is_refused_with_the_options(run_far_worse_early):
    (run_far_worse_early / "train.log").unlink()
    with pytest.raises(RecipeError, match=r"cannot check which checkpoints of .* are converged: no validation "
                                          r"loss at or before update 800 in train.log; pass --average 1 .* or "
                                          r"--unchecked-average to average the last 5 without the check"):
        checkpoints_to_average(run_far_worse_early, 5)
    paths, averaged = checkpoints_to_average(run_far_worse_early, 1)
    assert [p.name for p in paths] == ["checkpoint_last.pt"] and averaged["last_update"] == 800


def test_converged_tail_keeps_everything_within_the_tolerance():
    checkpoints = [(u, f"c{u}") for u in (960, 970, 980, 990, 1000)]
    curve = [(u, 1.41 + 0.02 * (u % 20 == 0)) for u in range(900, 1001, 10)]
    assert converged_tail(checkpoints, curve) == (checkpoints, "")


def test_validation_curve_keeps_one_point_per_update(tmp_path):
    write_log(tmp_path, [(25, 3.0), (50, 2.0), (50, 2.0), (75, 1.9)])
    assert validation_curve(tmp_path) == [(25, 3.0), (50, 2.0), (75, 1.9)]


def test_tokenized_bleu_of_an_english_pair_is_moses_tokenized_without_compound_splitting():
    """By hand: Moses splits "cat's" into "cat 's" and keeps "well-made" whole; 7 tokens each,
    one differs ("was"/"is"): 1-4-gram precisions 6/7, 4/6, 2/5, 1/4, brevity penalty 1."""
    hypothesis, reference = "The cat's toy was well-made.", "The cat's toy is well-made."
    expected = 100 * (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25  # 48.89
    assert tokenized_bleu([hypothesis], [reference], "en") == pytest.approx(expected, abs=0.01)
    scores = bleu_scores([hypothesis], [reference], "en")
    assert scores["bleu_tok"] == pytest.approx(expected, abs=0.01) and "no compound splitting" in scores["bleu_tok_method"]
    assert scores["bleu_lowercase"] == pytest.approx(expected, abs=0.01)


def test_a_german_output_gets_its_compounds_split():
    """"Haus-Tür" is 3 tokens after splitting ("Haus ##AT##-##AT## Tür"): against "Haus Tür" the
    hypothesis has 2 of its 3 unigrams right and no bigram: BLEU 0; unsplit it would be 1 token."""
    from fairseq_normmatters.recipes.run.scoring import moses_tokens
    assert moses_tokens("Die Haus-Tür ist offen.", "de") == "Die Haus ##AT##-##AT## Tür ist offen ."
    assert moses_tokens("The well-made toy.", "en") == "The well-made toy ."
    with pytest.raises(ValueError, match="no tokenized BLEU convention for target language 'fr'; known: en, de"):
        bleu_scores(["a"], ["a"], "fr")


def result(name, config, seed, fall, direction="de-en", benchmark="wmt14"):
    return {"name": name, "config": config, "seed": seed, "bleu": 50.0 + seed, "bleu_tok": 51.0, "bleu_lowercase": 52.0,
            "valid_ppl": 1.5, "test_ppl": 1.6, "num_updates": 800, "sacrebleu_signature": "sig", "curve": [],
            "direction": direction, "benchmark": benchmark,
            "averaged": {"first_update": 700, "last_update": 800, "checkpoints": 5, "asked": 5, "narrowed": ""},
            "training": {"updates": 800, "tail_fall_bits": fall, "still_learning": fall > 0.0144}}


def test_the_tables_and_the_last_line_say_which_runs_were_still_learning():
    runs = [result("transformer_l2-seed1", "transformer_l2", 1, 0.005),
            result("transformer_l1-seed1", "transformer_l1", 1, 0.258),
            result("transformer_bwn-seed1", "transformer_bwn", 1, -0.002)]
    rows = {line.split(" | ")[0][2:]: line for line in comparison_table(runs).splitlines()[2:5]}
    assert rows["transformer_l1"].endswith("| 800 | early training: transformer_l1-seed1 (0.2580 bits) still learning |")
    assert rows["transformer_bwn"].endswith("| 800 | plateau |")
    assert "| 700-800 (5) | early training, 0.2580 bits (19.58% of perplexity) |" in table(runs)
    assert verdict_line(runs).startswith("[compare] 1 of 3 runs were in early training, still learning before their "
                                         "schedule ended or stopped in its warm-up (transformer_l1-seed1 (0.2580 "
                                         "bits) of NLL over the last fifth): the rows with them compare early "
                                         "training at 800 updates")
    assert verdict_line([runs[0], runs[2]]) == (
        "[compare] every run was on its plateau (validation NLL down at most 1% of perplexity over its last fifth): "
        "the differences compare the models at 800 updates")


def test_narrow_accumulation_is_compared_with_its_own_kind_and_a_diverged_seed_is_left_out():
    runs = [result("transformer_l2-seed1", "transformer_l2", 1, 0.005),
            result("transformer_l1-seed1", "transformer_l1", 1, 0.005),
            result("transformer_l1_acc_bf16-seed1", "transformer_l1_acc_bf16", 1, 0.005),
            {**result("transformer_l1_acc_bf16-seed2", "transformer_l1_acc_bf16", 2, 0.3), "bleu": None,
             "diverged": {"update": 300, "reason": "gradients are Nan/Inf"}}]
    runs[2]["bleu"] = 48.5
    row = next(line for line in comparison_table(runs).splitlines() if line.startswith("| transformer_l1_acc_bf16 |"))
    cells = row.split(" | ")
    assert cells[1:4] == ["1, 2", "48.50", "-2.50"]  # seed 1 only, against transformer_l1's 51.00
    assert row.endswith("| seed 2 at update 300 | 800 | plateau |")  # the diverged seed is not "still learning"
    assert "| 700-800 (5) | diverged at update 300 |" in table(runs)
    assert verdict_line(runs) == ("[compare] every run that did not diverge was on its plateau (validation NLL down at "
                                  "most 1% of perplexity over its last fifth): the differences compare the models at "
                                  "800 updates; 1 of 4 runs diverged (transformer_l1_acc_bf16-seed2 at update 300): "
                                  "they have no scores and the means leave them out")


def test_the_papers_numbers_appear_only_beside_runs_of_their_direction():
    de_en, en_de = result("a", "transformer_l2", 1, 0.0), result("b", "transformer_l2", 1, 0.0, "en-de")
    assert paper_number(de_en, "bleu") is None and paper_number(en_de, "bleu") == 27.3  # Vaswani et al.: en-de
    assert paper_number(de_en, "ppl") == 5.1 and paper_number(en_de, "ppl") is None
    iwslt = result("c", "transformer_l2", 1, 0.0, benchmark="iwslt14")
    assert paper_number(iwslt, "ppl") is None
    bwn = [result("d", "transformer_bwn", 1, 0.0), de_en]
    assert "| 27.3 |" not in table(bwn) and "| 26.5 |" in table(bwn)
    # BWN's 26.5 (de-en) against 27.3 (en-de) is no paper difference
    row = next(line for line in comparison_table(bwn).splitlines() if line.startswith("| transformer_bwn |"))
    assert row.split(" | ")[6] == "—"
    # each number in its own terms: which BLEU, which perplexity units
    assert "Paper BLEU of Hoffer et al. (26.5 (transformer_bwn)): BLEU on WMT14 de-en, its tokenization not stated" \
        in table(bwn)
    assert "Paper perplexity of Hoffer et al. (5.1 (transformer_l2)): perplexity per token of the authors' own " \
           "subword vocabulary" in table(bwn) and "only differences between rows compare" in table(bwn)
    assert "Paper BLEU of Vaswani et al. 2017 (27.3 (transformer_l2)): tokenized BLEU with compound splitting " \
           "(##AT##-##AT##) on newstest2014 en-de: read it against the BLEU (tok.) of en-de runs" in table([en_de])
    assert "Paper BLEU" not in table([iwslt])


def test_compare_refuses_another_direction(tmp_path):
    from fairseq_normmatters.recipes.compare import check_direction, parse_args
    (tmp_path / "prepare.json").write_text(json.dumps({"status": "done", "settings": {"direction": "de-en"}}))
    args = parse_args(["wmt14", str(tmp_path), str(tmp_path / "out"), "--direction", "en-de"])
    with pytest.raises(RecipeError, match=rf"--direction en-de: {tmp_path} was prepared for de-en; prepare another "
                                          r"directory with scripts/prepare_wmt14_de_en.sh --direction en-de"):
        check_direction(args)
    check_direction(parse_args(["wmt14", str(tmp_path), str(tmp_path / "out")]))  # the prepared one: fine


def test_compare_help_states_the_rule(capsys):
    from fairseq_normmatters.recipes.compare import parse_args
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    for said in ("validation NLL (bits a token, not the label-smoothed loss)",
                 "on its plateau when it fell at most 0.0144 bits (1% of perplexity), else still learning"):
        assert "".join(said.split()) in help_text


def test_welch_p_values_match_students_t_table():
    """Two-sided 5% critical values of Student's t (df 1, 2, 4, 30) and Welch's test by hand: 3 seeds
    at 97.1, 96.5, 97.8 against 2 at 90.2, 91.5 (t 8.370, Welch-Satterthwaite df 1.686, p 0.0227; scipy.stats.ttest_ind(equal_var=False) agrees)."""
    from fairseq_normmatters.recipes.report.welch import student_t_two_sided_p, welch_test
    for t, df in ((12.706, 1), (4.303, 2), (2.776, 4), (2.042, 30)):
        assert student_t_two_sided_p(t, df) == pytest.approx(0.05, abs=2e-4)
    assert student_t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    test = welch_test([97.1, 96.5, 97.8], [90.2, 91.5])
    assert (test.t, test.df, test.p) == pytest.approx((8.3695, 1.6855, 0.022727), rel=1e-4)
    assert welch_test([1.0], [2.0, 3.0]) is None
    assert welch_test([2.0, 2.0], [1.0, 1.0]).p == 0.0 and welch_test([1.0, 1.0], [1.0, 1.0]).p == 1.0


def test_the_table_and_the_verdict_flag_a_configuration_worse_beyond_its_seeds():
    """A configuration 6 BLEU below its baseline with seeds 0.5 apart is 'worse'; one 0.3 below with
    the same spread is within it; a lone seed is not judged."""
    bleu = {("transformer_l2", 1): 90.0, ("transformer_l2", 2): 90.5, ("transformer_none", 1): 84.0,
            ("transformer_none", 2): 84.5, ("transformer_l1", 1): 89.7, ("transformer_l1", 2): 90.2,
            ("transformer_bwn", 1): 80.0}
    runs = [{**result(f"{config}-seed{seed}", config, seed, 0.005), "bleu": value}
            for (config, seed), value in bleu.items()]
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in comparison_table(runs).splitlines()[2:6]}
    assert rows["transformer_none"][4] == "worse (p 0.003)" and rows["transformer_none"][3] == "-6.00 ± 0.35"
    assert rows["transformer_l1"][4] == "within the seeds' spread (p 0.486)"
    assert rows["transformer_bwn"][4] == "—" and rows["transformer_l2"][4] == "—"
    assert verdict_line(runs).endswith(
        "at 800 updates. Over the seeds (Welch's t-test of BLEU): transformer_none is worse than transformer_l2 "
        "(-6.00 BLEU, p 0.003); transformer_l1 is within the seeds' spread of transformer_l2 (-0.30 BLEU, p 0.486)")


def test_a_power_law_run_to_the_end_of_its_schedule_is_at_budget_and_cut_short_it_is_early_training():
    """a + b U^-0.5 to 100k updates, its schedule's end: 'at budget, still improving' with its
    fall said; the same curve cut at 20k of its 100k reads 'early training', as does a flat
    curve stopped within its warm-up. One doubling of 100k gains b (100k^-0.5 - 200k^-0.5)."""
    at_budget = training_state(POWER_LAW, budget=100000, warmup=4000)
    assert at_budget["phase"] == "at budget"
    assert state_cell(at_budget) == "at budget, still improving, 0.0272 bits (1.90% of perplexity)"
    assert at_budget["doubling_gain_bits"] == pytest.approx(73 * (100000 ** -0.5 - 200000 ** -0.5), rel=0.02)
    cut = training_state(POWER_LAW[:20], budget=100000, warmup=4000)
    assert cut["phase"] == "early training" and state_cell(cut).startswith("early training, ")
    in_warmup = training_state([(u, 3.0) for u in range(500, 3001, 500)], budget=3000, warmup=4000)
    assert in_warmup["phase"] == "early training" and in_warmup["still_learning"] is False


def write_run(folder, config, seed, curve, budget=100000, epoch=1):
    """A run folder as compare.sh leaves it: train.log's validations, run.json's command,
    results.json's scores."""
    folder.mkdir(parents=True)
    write_log(folder, curve)
    (folder / "run.json").write_text(json.dumps({"config": config, "command": [
        "fairseq-train", "bin", "--max-update", str(budget), "--warmup-updates", "4000", "--seed", str(seed)]}))
    (folder / "results.json").write_text(json.dumps({
        "config": config, "seed": seed, "bleu": 27.0, "bleu_tok": 27.5, "valid_ppl": 4.6, "test_ppl": 4.9,
        "num_updates": curve[-1][0], "sacrebleu_signature": "sig", "direction": "de-en", "benchmark": "wmt14",
        "precision": "bf16"}))
    return str(folder)


def power_law(a, b, end=100000):
    return [(u, a + b * u ** -0.5) for u in range(2000, end + 1, 2000)]


def test_collect_compares_at_budget_and_flags_families_that_cross_after_it(tmp_path, capsys):
    """Through collect_results.py: L2 (2.0 + 73 U^-0.5) is ahead of L1 (1.8705 + 120 U^-0.5) at
    its 100k-update budget by 0.019 bits, but L1 falls faster and is ahead at 200k: the row and the
    verdict say the ordering could change. BWN, parallel to L2 0.1 bits above it, would not move.
    The same runs cut at 20k of their 100k read as early training."""
    from fairseq_normmatters.recipes.report.collect import main as collect
    curves = {"transformer_l2": (2.0, 73), "transformer_l1": (1.8705, 120), "transformer_bwn": (2.1, 73)}
    folders = [write_run(tmp_path / f"{config}-seed{seed}", config, seed,
                         [(u, loss + 0.002 * (seed - 1.5)) for u, loss in power_law(a, b)])
               for config, (a, b) in curves.items() for seed in (1, 2)]
    runs = collect(folders + ["--out", str(tmp_path / "results.md"), "--quiet"])
    rows = {line.split(" | ")[0][2:]: line for line in (tmp_path / "results.md").read_text().splitlines()
            if line.startswith("| transformer_") and " | 1, 2 | " in line}
    assert "| at budget: transformer_l1-seed1 (" in rows["transformer_l1"]
    # +0.0191 -> -0.0244 exactly; train.log holds 3 decimals
    assert "the curves cross within one doubling (NLL difference +0.0190 -> -0.0246 bits at twice the updates): " \
           "the ordering could change |" in rows["transformer_l1"]
    assert "one doubling would not change it beyond the seeds' spread (NLL difference +0.1000 -> +0.1000" \
        in rows["transformer_bwn"]
    verdict = verdict_line(runs)
    assert verdict.startswith("[compare] every run ran its whole schedule; 6 of 6 were still improving at its end")
    assert "compare the models at this budget, at 100000 updates, as papers compare them. Extrapolated one " \
           "doubling (a + b U^-c over each curve's last half): transformer_l1 against transformer_l2: the curves " \
           "cross" in verdict and "transformer_bwn against" not in verdict and "early training" not in verdict

    # rows on their plateau on both sides are not extrapolated, whatever a fit of their wavering gives
    flat = {config: [(u, level + 0.004 * math.sin(u / 7000)) for u in range(2000, 100001, 2000)]
            for config, level in (("transformer_l2", 2.25), ("transformer_linf", 2.26))}
    mixed = [write_run(tmp_path / "flat" / f"{config}-seed{seed}", config, seed, curve)
             for config, curve in flat.items() for seed in (1, 2)]
    mixed += [write_run(tmp_path / "flat" / f"transformer_bwn-seed{seed}", "transformer_bwn", seed, power_law(2.1, 73))
              for seed in (1, 2)]
    verdict = verdict_line(collect(mixed + ["--quiet"]))
    assert "transformer_bwn against transformer_l2: one doubling could change" in verdict
    assert "transformer_linf against" not in verdict

    cut = [write_run(tmp_path / "cut" / f"{config}-seed1", config, 1, power_law(a, b, end=20000))
           for config, (a, b) in curves.items()]
    assert verdict_line(collect(cut + ["--quiet"])).startswith("[compare] 3 of 3 runs were in early training")


def test_the_verdict_says_when_compared_rows_trained_in_different_precisions():
    runs = [{**result("transformer_l2-seed1", "transformer_l2", 1, 0.005), "precision": "fp16"},
            {**result("transformer_bwn-seed1", "transformer_bwn", 1, 0.005), "precision": "amp"}]
    assert verdict_line(runs).endswith(". The rows trained in different precisions (transformer_l2 fp16, "
                                       "transformer_bwn amp): their differences include the arithmetic's, not the "
                                       "norms' alone (compare.sh --precision)")
    runs[1]["precision"] = "fp16"
    assert "precisions" not in verdict_line(runs)
