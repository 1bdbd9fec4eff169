"""Score a trained run: average checkpoints, translate the test set, BLEU and perplexity.

    scripts/evaluate.sh SAVE_DIR PREPARED_DIR [--average 5] [--beam 4] [--lenpen 0.6]

1. Average the parameters of the last --average checkpoints (checkpoint_E_U.pt by update if
   --save-interval-updates made them, else checkpointE.pt by epoch, else checkpoint_last.pt)
   into SAVE_DIR/checkpoint_avg.pt. fairseq's own averaging script is not shipped in its
   wheels; this is the same computation (parameter-wise mean).
2. fairseq-generate on test (beam 4, lenpen 0.6), sentencepiece-decoded.
   (fairseq-generate and fairseq-validate run inside this process: recipes.run_fairseq.)
3. sacreBLEU on the detokenized output against PREPARED_DIR/raw/test.en (signature kept),
   tokenized BLEU (13a tokens, compounds split at hyphens as ##AT##-##AT##) for comparison
   with WMT14 papers, and lowercased tokenized BLEU (13a) as IWSLT14 papers quote it.
4. fairseq-validate on valid and test: perplexity (base 2 of the label-free nll).

Writes SAVE_DIR/results.json (with the run's seed and the paths of its translations and of the
reference, for collect_results.py's significance tests) and SAVE_DIR/test.hyp.
"""

import argparse
import json
import re
from pathlib import Path

import torch

from ..fairseq_plugin.checkpoint import allow_fairseq_checkpoints
from . import RecipeError, check_not_half_prepared, run_fairseq, run_main, write_atomically, write_text_atomically

USER_DIR = str(Path(__file__).resolve().parent.parent)


def checkpoints_to_average(save_dir: Path, count: int):
    """The last `count` checkpoints by update (checkpoint_E_U.pt), else by epoch (checkpointE.pt)."""
    for pattern in (r"checkpoint_\d+_(\d+)\.pt", r"checkpoint(\d+)\.pt"):
        found = [(int(m.group(1)), p) for p in save_dir.glob("checkpoint*.pt")
                 if (m := re.fullmatch(pattern, p.name))]
        if found:
            return [p for _, p in sorted(found)][-count:]
    last = save_dir / "checkpoint_last.pt"
    if last.is_file():
        return [last]
    raise RecipeError(f"no checkpoint in {save_dir} (looked for checkpointN.pt and checkpoint_last.pt)")


def average_checkpoints(paths, output: Path) -> dict:
    """Mean of every floating-point tensor of the models' state dicts; the rest of the newest
    checkpoint (config, integer buffers, the normalization flags) is kept. Loaded weights-only."""
    allow_fairseq_checkpoints()  # not torch.serialization.safe_globals(): it disallows them again on exit
    total, newest = None, None
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
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


def training_seed(command) -> int:
    """The --seed of a fairseq-train command line (its last one; fairseq's default 1)."""
    seeds = [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == "--seed"]
    return int(seeds[-1]) if seeds else 1


def is_float_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def detokenized_hypotheses(generate_log: str):
    """The D- lines of fairseq-generate (post-processed text), in test-set order."""
    found = {int(i): text for i, text in re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", generate_log, re.M)}
    return [found[i] for i in sorted(found)]


def split_compounds(line: str) -> str:
    return re.sub(r"(\S)-(\S)", r"\1 ##AT##-##AT## \2", line)


def bleu_scores(hypotheses, references):
    """(sacreBLEU score, its signature, tokenized BLEU with compound splitting (WMT14 papers),
    lowercased tokenized BLEU (IWSLT14 papers, as fairseq's example reports it))."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    bleu = BLEU()
    score = bleu.corpus_score(hypotheses, [references]).score
    tokenize = Tokenizer13a()
    tokenized = BLEU(tokenize="none", force=True).corpus_score(
        [split_compounds(tokenize(h)) for h in hypotheses], [[split_compounds(tokenize(r)) for r in references]])
    lowercased = BLEU(lowercase=True).corpus_score(hypotheses, [references])
    return score, str(bleu.get_signature()), tokenized.score, lowercased.score


def perplexities(validate_log: str):
    """subset -> ppl from fairseq-validate's log."""
    return {subset: float(ppl) for subset, ppl in
            re.findall(r"valid on '(\w+)' subset \|.*?\| ppl ([\d.]+)", validate_log)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="evaluate.sh", description=__doc__.splitlines()[0])
    parser.add_argument("save_dir")
    parser.add_argument("prepared_dir")
    parser.add_argument("--average", type=int, default=5, help="last epoch checkpoints to average")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--lenpen", type=float, default=0.6)
    parser.add_argument("--max-tokens", type=int, default=8000)
    parser.add_argument("--cpu", action="store_true", help="evaluate on CPU even if CUDA is there")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    save_dir, prepared = Path(args.save_dir), Path(args.prepared_dir)
    check_not_half_prepared(prepared)
    data, reference = prepared / "bin", prepared / "raw" / "test.en"
    for needed in (data / "dict.de.txt", reference):
        if not needed.is_file():
            raise RecipeError(f"{needed} is missing: is {prepared} a directory made by prepare_wmt14_de_en.sh?")
    paths = checkpoints_to_average(save_dir, args.average)
    averaged = save_dir / "checkpoint_avg.pt"
    print(f"[evaluate] averaging {', '.join(p.name for p in paths)}", flush=True)
    state = average_checkpoints(paths, averaged)
    device = ["--cpu"] if args.cpu or not torch.cuda.is_available() else []
    # ve-fairseq 0.12.3 drops a last batch whose size is not a multiple of this (default 8)
    common = [data, "--user-dir", USER_DIR, "--path", averaged, "--max-tokens", args.max_tokens,
              "--required-batch-size-multiple", "1", *device]
    print("[evaluate] fairseq-generate on test", flush=True)
    generated = run_fairseq("fairseq-generate", *common, "--gen-subset", "test", "--beam", args.beam,
                            "--lenpen", args.lenpen, "--post-process", "sentencepiece")
    hypotheses = detokenized_hypotheses(generated)
    references = reference.read_text(encoding="utf-8").splitlines()
    if len(hypotheses) != len(references):
        raise RecipeError(f"fairseq-generate gave {len(hypotheses)} translations for {len(references)} references")
    write_text_atomically(save_dir / "test.hyp", "".join(h + "\n" for h in hypotheses))
    bleu, signature, bleu_tok, bleu_lowercase = bleu_scores(hypotheses, references)
    print("[evaluate] fairseq-validate on valid and test", flush=True)
    ppl = perplexities(run_fairseq("fairseq-validate", *common, "--task", "translation",
                                   "--valid-subset", "valid,test"))
    run = json.loads((save_dir / "run.json").read_text()) if (save_dir / "run.json").is_file() else {}
    results = {"config": run.get("config", save_dir.name), "benchmark": run.get("benchmark", "wmt14"),
               "seed": training_seed(run.get("command", [])),
               "bleu": round(bleu, 2), "hypotheses": str((save_dir / "test.hyp").resolve()),
               "reference": str(reference.resolve()),
               "sacrebleu_signature": signature, "bleu_tok": round(bleu_tok, 2),
               "bleu_lowercase": round(bleu_lowercase, 2),
               "valid_ppl": ppl.get("valid"), "test_ppl": ppl.get("test"),
               "checkpoints_averaged": [p.name for p in paths],
               "num_updates": state["optimizer_history"][-1]["num_updates"],
               "beam": args.beam, "lenpen": args.lenpen}
    write_text_atomically(save_dir / "results.json", json.dumps(results, indent=1))
    print(f"[evaluate] {results['config']}: BLEU {bleu:.2f} ({signature}), tokenized BLEU {bleu_tok:.2f}, "
          f"valid ppl {results['valid_ppl']}, test ppl {results['test_ppl']}")


if __name__ == "__main__":
    run_main(main, "evaluate.sh")
