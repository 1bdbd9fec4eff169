"""BLEU as papers of each translation direction compute it.

- **sacreBLEU** (the headline): detokenized, cased output against the raw reference, with its
  signature.
- **tokenized BLEU**: both sides Moses-tokenized (sacremoses, the target language's rules, no
  aggressive hyphen splitting), then BLEU on those tokens, as multi-bleu.perl computes it. For a
  German output, compounds are split at hyphens as well (`a-b` -> `a ##AT##-##AT## b`): the
  English->German convention of tensor2tensor's and fairseq's compound-split scoring, under
  which Vaswani et al.'s 27.3 was measured. An English output gets no compound splitting.
- **lowercased tokenized BLEU**: the same tokens lowercased, as IWSLT14 de-en papers quote it
  (fairseq's examples/translation prepare-iwslt14.sh tokenizes with Moses and lowercases).
"""

import re

from ..data.moses import moses_tokenizer

#: how each tokenized score is made, for the tables' notes
TOKENIZED_METHOD = {"en": "Moses-tokenized English (sacremoses), no compound splitting",
                    "de": "Moses-tokenized German (sacremoses) with compounds split at hyphens (##AT##)"}


def split_compounds(line: str) -> str:
    """`Haus-Tür` -> `Haus ##AT##-##AT## Tür` (compound-split BLEU of a German output)."""
    return re.sub(r"(\S)-(\S)", r"\1 ##AT##-##AT## \2", line)


def moses_tokens(line: str, language: str) -> str:
    """The line as Moses' tokenizer.perl -l LANGUAGE writes it, without escaping (which changes
    no BLEU: it maps a token to one token), compounds split for German."""
    tokens = moses_tokenizer(language).tokenize(line, escape=False, return_str=True)
    return split_compounds(tokens) if language == "de" else tokens


def tokenized_bleu(hypotheses, references, language: str, lowercase: bool = False) -> float:
    """Corpus BLEU of the Moses-tokenized lines (lowercased first if asked)."""
    from sacrebleu.metrics import BLEU
    prepare = (lambda line: moses_tokens(line.lower() if lowercase else line, language))
    return BLEU(tokenize="none", force=True).corpus_score(
        [prepare(h) for h in hypotheses], [[prepare(r) for r in references]]).score


def bleu_scores(hypotheses, references, language: str) -> dict:
    """{"bleu": sacreBLEU, "sacrebleu_signature", "bleu_tok", "bleu_lowercase", "bleu_tok_method"}
    for translations into `language` (en or de)."""
    from sacrebleu.metrics import BLEU
    if language not in TOKENIZED_METHOD:
        raise ValueError(f"no tokenized BLEU convention for target language {language!r}; known: "
                         f"{', '.join(TOKENIZED_METHOD)}")
    bleu = BLEU()
    score = bleu.corpus_score(hypotheses, [references]).score
    return {"bleu": round(score, 2), "sacrebleu_signature": str(bleu.get_signature()),
            "bleu_tok": round(tokenized_bleu(hypotheses, references, language), 2),
            "bleu_lowercase": round(tokenized_bleu(hypotheses, references, language, lowercase=True), 2),
            "bleu_tok_method": TOKENIZED_METHOD[language]}
