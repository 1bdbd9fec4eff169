"""Moses' tokenizer of a language (sacremoses, made once): the IWSLT14 length filter counts its
tokens as prepare-iwslt14.sh does, and tokenized BLEU scores them (run/scoring.py)."""

from functools import lru_cache


@lru_cache(maxsize=None)
def moses_tokenizer(language: str):
    from sacremoses import MosesTokenizer
    return MosesTokenizer(lang=language)
