"""Prepare IWSLT14 de->en for fairseq, with the split users compare against.

    scripts/prepare_iwslt14_de_en.sh --raw-dir RAW [--vocab-size 10000] OUT

RAW holds the archive as distributed, `de-en.tgz`, or its extracted files (placed as in the
archive, under de-en/, or flat): train.tags.de-en.{de,en} (TED talks, one sentence a line,
among talk metadata lines such as <url>, <talkid>, <keywords>) and the
IWSLT14.TED.{dev2010,tst2010,tst2011,tst2012} and IWSLT14.TEDX.dev2012 .de-en.{de,en}.xml
files (sentences in <seg id=...>). As fairseq's examples/translation/prepare-iwslt14.sh does:
the lines with <url>, <talkid> or <keywords> are dropped (the <title> and <description> texts
kept, unwrapped), the training pairs are cleaned as its clean-corpus-n.perl cleans them, on the
lengths in Moses tokens (sacremoses, each language's rules: empty, over --max-len 175 tokens,
length ratio over 1.5), every 23rd cleaned pair becomes the validation set and the rest the
training set, and the test set is TED dev2010, TEDX dev2012 and TED tst2010-2012 in that order:
the same pairs in each split. Unlike that script the text kept is not Moses-tokenized nor
lowercased: one joint sentencepiece model (--vocab-size 10000) encodes it, so that sacreBLEU
scores detokenized, cased output (evaluate.sh adds the lowercased, Moses-tokenized BLEU that
IWSLT14 papers quote). No download: the archive is not on a stable URL.
OUT receives raw/, spm/, bin/ and prepare.json as prepare_wmt14_de_en.sh's.
"""

import re
from pathlib import Path

from ..common import RecipeError, run_main
from .chunked import worker_pool
from .prepare import LANGS, SourceFinder, check_parallel, clean_pairs, finish, parse_args, start
from .moses import moses_tokenizer

ARCHIVE = "de-en.tgz"
TRAIN = "de-en/train.tags.de-en.{}"
TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
             "IWSLT14.TED.tst2012")
VALID_EVERY = 23
METADATA = ("<url>", "<talkid>", "<keywords>")  # the lines prepare-iwslt14.sh drops (grep -v)
KEPT_TAGS = re.compile(r"</?(title|description)>")


def training_text(lines):
    """train.tags lines without the talk metadata; <title>/<description> texts kept, unwrapped."""
    return [KEPT_TAGS.sub("", line).strip() for line in lines if not any(tag in line for tag in METADATA)]


def read_iwslt14(raw):
    """(train pairs, test pairs): each a (German lines, English lines) tuple, from RAW."""
    finder = SourceFinder(raw, "IWSLT14")
    train = [training_text(finder.read_lines(ARCHIVE, TRAIN.format(lang))) for lang in LANGS]
    check_parallel(TRAIN.format("de"), train[0], TRAIN.format("en"), train[1])
    test = ([], [])
    for name in TEST_SETS:
        de, en = ([seg.strip() for seg in finder.read_lines(ARCHIVE, xml_file(name, lang))] for lang in LANGS)
        check_parallel(xml_file(name, "de"), de, xml_file(name, "en"), en)
        test[0].extend(de)
        test[1].extend(en)
    return tuple(train), test


def moses_length(line_and_language) -> int:
    line, language = line_and_language
    return len(moses_tokenizer(language).tokenize(line, escape=False))


def moses_lengths(lines, language: str, workers: int):
    """The number of Moses tokens of each line (as prepare-iwslt14.sh counts them: after
    tokenizer.perl -l LANGUAGE), on `workers` processes."""
    with worker_pool(max(1, workers)) as pool:
        return pool.map(moses_length, [(line, language) for line in lines], chunksize=2000)


def xml_file(test_set: str, lang: str) -> str:
    return f"de-en/{test_set}.de-en.{lang}.xml"


def split_validation(de, en):
    """(train, valid): every 23rd pair (the 23rd, 46th, ...) for validation, the rest for training."""
    is_valid = [(i + 1) % VALID_EVERY == 0 for i in range(len(de))]
    pick = lambda lines, want: [line for line, v in zip(lines, is_valid) if v == want]  # noqa: E731
    return (pick(de, False), pick(en, False)), (pick(de, True), pick(en, True))


def main(argv=None):
    args = parse_args(argv, prog="prepare_iwslt14_de_en.sh", description=__doc__, vocab_size=10000, max_len=175,
                      raw_help="de-en.tgz as distributed, or its extracted files")
    if not args.raw_dir:
        raise RecipeError("--raw-dir RAW is needed: the IWSLT14 archive (de-en.tgz) is not downloaded by this script")
    out, settings = start(args)
    if settings is None:
        return
    print(f"[prepare] reading {args.raw_dir}", flush=True)
    (train_de, train_en), test = read_iwslt14(Path(args.raw_dir).resolve())
    print(f"[prepare] counting Moses tokens of {len(train_de)} pairs", flush=True)
    lengths = tuple(moses_lengths(lines, lang, args.workers) for lines, lang in zip((train_de, train_en), LANGS))
    cleaned = clean_pairs(train_de, train_en, args.max_len, args.max_ratio, lengths)
    if not cleaned[0]:
        raise RecipeError(f"the cleaning kept 0 of the {len(train_de)} training pairs (1-{args.max_len} Moses tokens "
                          f"a side, length ratio at most {args.max_ratio}): loosen --max-len or --max-ratio")
    train, valid = split_validation(*cleaned)
    print(f"[prepare] {len(cleaned[0])} of {len(train_de)} pairs kept after cleaning: {len(train[0])} train, "
          f"{len(valid[0])} valid; {len(test[0])} test", flush=True)
    finish(out, settings, args, {split: list(zip(*pair)) for split, pair in
                                 (("train", train), ("valid", valid), ("test", test))})


if __name__ == "__main__":
    run_main(main, "prepare_iwslt14_de_en.sh", sigterm_interrupts=True)
