"""Score a trained run: average its converged tail, translate the test set, BLEU and perplexity.

    scripts/evaluate.sh SAVE_DIR PREPARED_DIR [--average 5] [--beam 4] [--lenpen 0.6]
                        [--unchecked-average]

1. Average the parameters of the run's last --average checkpoints by update (checkpoint_E_U.pt,
   checkpointE.pt and checkpoint_last.pt alike, ordered by the update each holds, so the final
   state counts even when only checkpoint_last.pt has it) into SAVE_DIR/checkpoint_avg.pt,
   keeping only the converged tail: from the newest back, the checkpoints whose validation NLL
   (the last validation at or before their update, in SAVE_DIR/train.log) is at most {tolerance}
   bits (2% of perplexity) above the newest checkpoint's, stopping at the first that is not. A narrowed average is
   said on the screen and in results.json ("averaged": the update range and the reason). A run
   whose train.log has no validation loss at or before its newest checkpoint is refused: pass
   --average 1 to score that checkpoint alone, or --unchecked-average to average the last N
   without the check. fairseq's own averaging script is not shipped in its wheels; this is the
   same computation (parameter-wise mean).
2. fairseq-generate on test (beam 4, lenpen 0.6), sentencepiece-decoded.
   (fairseq-generate and fairseq-validate run inside this process: recipes.run_fairseq.)
3. sacreBLEU on the detokenized output against PREPARED_DIR/raw/test.TARGET (signature kept),
   tokenized BLEU as papers of the direction quote it (recipes/run/scoring.py: Moses-tokenized; a
   German output with compounds split) and the same lowercased (IWSLT14 papers).
4. fairseq-validate on valid and test: perplexity (base 2 of the label-free nll).

5. With --remove-unneeded-checkpoints (compare.sh's default), once the results are written: the
   checkpoints that neither this average nor a resume needs are deleted, and the averaged ones
   other than checkpoint_last.pt keep only their weights.

Writes SAVE_DIR/results.json (with the run's seed, its state of training (recipes/run/convergence.py),
the averaged range, and the paths of its translations and of the reference, for
collect_results.py's significance tests) and SAVE_DIR/test.hyp.
"""

import argparse
import pickle
import re
from pathlib import Path

import torch

from ...fairseq_plugin.checkpoint import allow_fairseq_checkpoints
from ..common import (DIRECTIONS, RecipeError, check_not_half_prepared, prepared_direction, read_lines, run_fairseq,
               run_main, write_atomically, write_text_atomically)
from .folder import RunFolder
from .convergence import AVERAGE_TOLERANCE_BITS, averaged_span, converged_tail, training_state, validation_curve
from .scoring import bleu_scores
from .batch import last_value

USER_DIR = str(Path(__file__).resolve().parent.parent)
__doc__ = __doc__.replace("{tolerance}", f"{AVERAGE_TOLERANCE_BITS:.3f}")
NOT_AVERAGED = ("checkpoint_best.pt", "checkpoint_avg.pt")  # copies of an earlier state / our output


def checkpoint_updates(path: Path) -> int:
    """The update count a fairseq checkpoint holds (its tensors memory-mapped, not read)."""
    state = load_checkpoint(path, mmap=True)
    try:
        return state["optimizer_history"][-1]["num_updates"]
    except (KeyError, IndexError, TypeError):
        raise RecipeError(f"{path} is not a fairseq checkpoint (it holds no optimizer_history): move it out of "
                          f"{path.parent}, or evaluate another run") from None


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A checkpoint loaded weights-only; one RecipeError for a file that is truncated, corrupt,
    not a checkpoint at all, or refused by the weights-only loader (with torch's reason)."""
    allow_fairseq_checkpoints()  # not torch.serialization.safe_globals(): it disallows them again on exit
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        what = ("it holds code that the weights-only loader refused, and none of it ran"
                if "Weights only load failed" in str(error) else "it is truncated, corrupt or not a checkpoint")
        raise RecipeError(f"checkpoint {path} cannot be loaded ({type(error).__name__}: {error}); {what}: nothing "
                          "was written; move it aside (the run resumes from another checkpoint) or evaluate another "
                          "run") from None


def checkpoints_by_update(save_dir: Path):
    """[(updates, path)] of every checkpoint of the run, one per update count (a named one before
    checkpoint_last.pt holding the same state), oldest first."""
    found = {}
    for path in sorted(save_dir.glob("checkpoint*.pt"), key=lambda p: p.name == "checkpoint_last.pt"):
        if path.name not in NOT_AVERAGED:
            found.setdefault(checkpoint_updates(path), path)
    if not found:
        raise RecipeError(f"no checkpoint in {save_dir} (looked for checkpoint*.pt)")
    return sorted(found.items())


def checkpoints_to_average(save_dir: Path, count: int, checked: bool = True, curve=None):
    """(paths, description): the last `count` checkpoints by update, narrowed to the converged
    tail (convergence.converged_tail, on `curve` or the run's validation curve) unless not
    `checked`; description is results.json's "averaged" record: first and last update, count,
    and why it was narrowed."""
    last = checkpoints_by_update(save_dir)[-count:]
    kept, narrowed = last, ""
    if checked and len(last) > 1:
        kept, narrowed = converged_tail(last, validation_curve(save_dir) if curve is None else curve)
        if kept is None:
            raise RecipeError(f"cannot check which checkpoints of {save_dir} are converged: {narrowed}; "
                              "pass --average 1 to score the last checkpoint alone, or --unchecked-average "
                              f"to average the last {count} without the check")
    description = {"first_update": kept[0][0], "last_update": kept[-1][0], "checkpoints": len(kept),
                   "asked": count, "narrowed": narrowed, "checked": checked or len(last) == 1}
    return [path for _, path in kept], description


def averaged_range(averaged: dict) -> str:
    """'updates 500-600 (5 of 5 checkpoints)', for the screen."""
    return f"updates {averaged_span(averaged)} ({averaged['checkpoints']} of {averaged['asked']} checkpoints)"


def average_checkpoints(paths, output: Path) -> dict:
    """Mean of every floating-point tensor of the models' state dicts; the rest of the newest
    checkpoint (config, integer buffers, the normalization flags) is kept. Loaded weights-only."""
    total, newest = None, None
    for path in paths:
        state = load_checkpoint(path)
        model = state["model"]
        if total is None:
            total = {k: v.double() if is_float_tensor(v) else v for k, v in model.items()}
        else:
            if model.keys() != total.keys():
                raise RecipeError(f"{path} holds other parameters than {paths[0]}: not the same model")
            for key, value in model.items():
                if is_float_tensor(value):
                    total[key] += value.double()
        newest = state
    newest["model"] = {k: (v / len(paths)).to(newest["model"][k].dtype) if is_float_tensor(v) else v
                       for k, v in total.items()}
    newest["last_optimizer_state"] = None
    write_atomically(output, lambda temporary: torch.save(newest, temporary))
    return newest


def kept_checkpoints(save_dir: Path, averaged):
    """What an evaluated run keeps: the averaged checkpoints (to average again), checkpoint_last.pt
    (to resume) and the average itself."""
    kept = {Path(p).name for p in averaged} | {"checkpoint_last.pt", "checkpoint_avg.pt"}
    return sorted(p for p in save_dir.glob("checkpoint*.pt") if p.name in kept)


def remove_unneeded_checkpoints(save_dir: Path, averaged):
    """(files removed, files stripped, bytes freed): every checkpoint but kept_checkpoints deleted, and the
    averaged ones other than checkpoint_last.pt rewritten without their optimizer state (an
    average reads only the weights; Adam's two moments are two thirds of a checkpoint)."""
    kept, freed, removed, stripped = kept_checkpoints(save_dir, averaged), 0, 0, 0
    for path in save_dir.glob("checkpoint*.pt"):
        if path not in kept:
            freed += path.stat().st_size
            path.unlink()
            removed += 1
    for path in kept:
        if path.name in ("checkpoint_last.pt", "checkpoint_avg.pt"):
            continue
        before = path.stat().st_size
        state = load_checkpoint(path)
        if state.get("last_optimizer_state") is not None:
            state["last_optimizer_state"] = None
            write_atomically(path, lambda temporary: torch.save(state, temporary))
            freed += before - path.stat().st_size
            stripped += 1
    return removed, stripped, freed


def training_seed(command) -> int:
    """The --seed of a fairseq-train command line (its last one; fairseq's default 1)."""
    return int(last_value(command, "--seed", 1))


def is_float_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def detokenized_hypotheses(generate_log: str):
    """The D- lines of fairseq-generate (post-processed text), in test-set order."""
    found = {int(i): text for i, text in re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", generate_log, re.M)}
    return [found[i] for i in sorted(found)]


def perplexities(validate_log: str):
    """subset -> ppl from fairseq-validate's log."""
    return {subset: float(ppl) for subset, ppl in
            re.findall(r"valid on '(\w+)' subset \|.*?\| ppl ([\d.]+)", validate_log)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="evaluate.sh", description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("1. "):__doc__.index("2. ")],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("save_dir")
    parser.add_argument("prepared_dir")
    parser.add_argument("--average", type=int, default=5,
                        help="the last N checkpoints by update, narrowed to the converged tail (default 5)")
    parser.add_argument("--unchecked-average", action="store_true",
                        help="average the last N whatever their validation losses")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--lenpen", type=float, default=0.6)
    parser.add_argument("--max-tokens", type=int, default=8000)
    parser.add_argument("--cpu", action="store_true", help="evaluate on CPU even if CUDA is there")
    parser.add_argument("--remove-unneeded-checkpoints", action="store_true",
                        help="once scored, delete the checkpoints that neither this average nor a resume "
                             "needs, and the optimizer states of the averaged ones but checkpoint_last.pt")
    args = parser.parse_args(argv)
    if args.average < 1:
        parser.error(f"--average {args.average}: needs at least 1")
    return args


def run_identity(save_dir: Path, prepared: Path) -> dict:
    """What results.json says of the run itself: its configuration, benchmark, direction, seed,
    batch and precision (from the run.json compare.sh and train_*.sh write)."""
    run = RunFolder(save_dir).record() or {}
    return {"config": run.get("config", save_dir.name), "benchmark": run.get("benchmark", "wmt14"),
            "direction": prepared_direction(prepared), "seed": training_seed(run.get("command", [])),
            "effective_batch": run.get("effective_batch"), "precision": run.get("precision")}


def diverging_update(save_dir: Path) -> int:
    """The update whose gradients were NaN or inf: the one after the state fairseq saved in
    SAVE_DIR/crash.pt when it raised; without that file, the one after the last update count
    in SAVE_DIR/train.log (fairseq's json log), or 1."""
    if (save_dir / "crash.pt").is_file():
        return checkpoint_updates(save_dir / "crash.pt") + 1
    log = RunFolder(save_dir).train_log
    counts = re.findall(r'"num_updates": "?(\d+)', log.read_text(encoding="utf-8")) if log.is_file() else []
    return int(counts[-1]) + 1 if counts else 1


def write_divergence(save_dir: Path, prepared: Path, reason: str) -> dict:
    """results.json of a run whose training diverged (fairseq raised FloatingPointError: NaN or
    inf gradients, or fp16's loss scale at its minimum): no scores, the update it had reached
    and why, so that the tables count it as diverged instead of the comparison failing."""
    save_dir = Path(save_dir)
    update = diverging_update(save_dir)
    results = {**run_identity(save_dir, Path(prepared)), "diverged": {"update": update, "reason": reason},
               "training": training_state(validation_curve(save_dir)), "num_updates": update}
    RunFolder(save_dir).write_results(results)
    return results


def outcome(results: dict) -> str:
    """'BLEU 23.4' or 'diverged at update 300 (gradients are Nan/Inf)': a run's results in words."""
    diverged = results.get("diverged")
    if diverged:
        return f"diverged at update {diverged['update']} ({diverged['reason']})"
    return f"BLEU {results['bleu']}"


def main(argv=None):
    evaluate_run(parse_args(argv))


def evaluate_run(args) -> None:
    """Average, translate and score the run of args.save_dir (evaluate.sh's options, parse_args),
    then write its results.json (and remove the checkpoints no longer needed, if asked)."""
    save_dir, prepared = Path(args.save_dir), Path(args.prepared_dir)
    folder = RunFolder(save_dir)
    check_not_half_prepared(prepared)
    direction = prepared_direction(prepared)
    source, target = DIRECTIONS[direction]
    data, reference = prepared / "bin", prepared / "raw" / f"test.{target}"
    for needed in (data / f"dict.{source}.txt", reference):
        if not needed.is_file():
            raise RecipeError(f"{needed} is missing: is {prepared} a directory made by prepare_wmt14_de_en.sh?")
    curve, average = validation_curve(save_dir), folder.averaged_checkpoint
    paths, averaged = checkpoints_to_average(save_dir, args.average, not args.unchecked_average, curve)
    print(f"[evaluate] averaging {averaged_range(averaged)}: {', '.join(p.name for p in paths)}"
          + (f"; narrowed: {averaged['narrowed']}" if averaged["narrowed"] else ""), flush=True)
    state = average_checkpoints(paths, average)
    device = ["--cpu"] if args.cpu or not torch.cuda.is_available() else []
    # ve-fairseq 0.12.3 drops a last batch whose size is not a multiple of this (default 8)
    common = [data, "--user-dir", USER_DIR, "--path", average, "--max-tokens",
              args.max_tokens, "--required-batch-size-multiple", "1", "--source-lang", source,
              "--target-lang", target, *device]
    print("[evaluate] fairseq-generate on test", flush=True)
    generated = run_fairseq("fairseq-generate", *common, "--gen-subset", "test", "--beam", args.beam,
                            "--lenpen", args.lenpen, "--post-process", "sentencepiece")
    hypotheses = detokenized_hypotheses(generated)
    references = read_lines(reference)
    if len(hypotheses) != len(references):
        raise RecipeError(f"fairseq-generate gave {len(hypotheses)} translations for {len(references)} references")
    write_text_atomically(save_dir / "test.hyp", "".join(h + "\n" for h in hypotheses))
    scores = bleu_scores(hypotheses, references, target)
    print("[evaluate] fairseq-validate on valid and test", flush=True)
    ppl = perplexities(run_fairseq("fairseq-validate", *common, "--task", "translation",
                                   "--valid-subset", "valid,test"))
    results = {**run_identity(save_dir, prepared), **scores,
               "hypotheses": str((save_dir / "test.hyp").resolve()), "reference": str(reference.resolve()),
               "valid_ppl": ppl.get("valid"), "test_ppl": ppl.get("test"),
               "checkpoints_averaged": [p.name for p in paths], "averaged": averaged,
               "training": training_state(curve),
               "num_updates": state["optimizer_history"][-1]["num_updates"],
               "beam": args.beam, "lenpen": args.lenpen}
    folder.write_results(results)
    if args.remove_unneeded_checkpoints:
        removed, stripped, freed = remove_unneeded_checkpoints(save_dir, paths)
        print(f"[evaluate] removed {removed} checkpoint(s) and the optimizer states of {stripped}: "
              f"{freed / 1e6:.1f} MB freed; kept {', '.join(p.name for p in kept_checkpoints(save_dir, paths))}")
    print(f"[evaluate] {results['config']}: BLEU {scores['bleu']:.2f} ({scores['sacrebleu_signature']}), "
          f"tokenized BLEU {scores['bleu_tok']:.2f}, valid ppl {results['valid_ppl']}, test ppl {results['test_ppl']}")


if __name__ == "__main__":
    run_main(main, "evaluate.sh")
