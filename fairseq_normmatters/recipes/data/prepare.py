"""Prepare WMT14 de->en or en->de (or any plain parallel corpus) for fairseq: clean, sentencepiece, binarize.

    scripts/prepare_wmt14_de_en.sh [--raw-dir RAW] [--vocab-size 32000] [--direction de-en|en-de] OUT

RAW holds the official WMT14 archives as downloaded, or their extracted files, or a plain
corpus (train/valid/test.{de,en}, as the demo's). Without --raw-dir the archives are
downloaded into OUT/downloads first. OUT receives:

    raw/{train,valid,test}.{de,en}   cleaned text (test: the full newstest2014 of the direction,
                                     de-en the German source and English reference files, en-de
                                     the English source and German reference: its source cleaned
                                     as the training text, its reference as released)
    spm/spm.model, spm/*.{de,en}     one joint sentencepiece model and the encoded text
    bin/                             what fairseq-preprocess --joined-dictionary writes (recipes/
                                     binarize.py), source and target as --direction says (default de-en)
    prepare.json                     the settings and "done" once finished

It streams: the corpus is read, cleaned, encoded and written a chunk at a time (chunked.CHUNK
pairs, --workers processes), so its memory does not grow with the corpus (scripts/bench/bench_prepare.py
measures it). The training text is cleaned as fairseq's prepare-wmt14en2de.sh cleans it: Moses'
punctuation normalization and removal of non-printing characters (sacremoses, `\\p{C}` -> space)
before sentencepiece, then pairs of 1 to --max-len pieces on both sides and a length ratio of at
most --max-ratio kept, counted in sentencepiece pieces as fairseq counts BPE tokens (its
clean-corpus-n.perl runs after BPE). The validation text is normalized likewise, and so is the
test set's source (as fairseq's script does: characters the normalized training text never held,
such as „ “ –, would reach the model as <unk>); its reference is left as released (sacreBLEU
scores against it). prepare says what share of each split's source pieces is <unk>, and
prepare.json keeps the counts ("unknown_tokens").
"""

import argparse
import contextlib
import functools
import html
import itertools
import json
import os
import re
import shutil
import tarfile
import unicodedata
import urllib.request
from pathlib import Path

from ..common import DIRECTIONS, RecipeError, run_main, text_lines, write_text_atomically, writing_together
from .binarize import preprocess
from .chunked import chunks, map_chunks, worker_pool

WMT14_ARCHIVES = {
    "training-parallel-europarl-v7.tgz": "https://www.statmt.org/europarl/v7/de-en.tgz",
    "training-parallel-commoncrawl.tgz": "https://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz",
    "training-parallel-nc-v9.tgz": "https://www.statmt.org/wmt14/training-parallel-nc-v9.tgz",
    "dev.tgz": "https://www.statmt.org/wmt14/dev.tgz",
    "test-full.tgz": "https://www.statmt.org/wmt14/test-full.tgz",
}
# split -> [(archive, member path of the German file, member path of the English file)]
WMT14_FILES = {
    "train": [
        ("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en.de", "training/europarl-v7.de-en.en"),
        ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en.de", "commoncrawl.de-en.en"),
        ("training-parallel-nc-v9.tgz", "training/news-commentary-v9.de-en.de",
         "training/news-commentary-v9.de-en.en"),
    ],
    "valid": [("dev.tgz", "dev/newstest2013.de", "dev/newstest2013.en")],
}
# direction -> the test set's (archive, German file, English file): the source and reference of newstest2014
WMT14_TEST = {"de-en": ("test-full.tgz", "test-full/newstest2014-deen-src.de.sgm",
                        "test-full/newstest2014-deen-ref.en.sgm"),
              "en-de": ("test-full.tgz", "test-full/newstest2014-deen-ref.de.sgm",
                        "test-full/newstest2014-deen-src.en.sgm")}
SPLITS = ("train", "valid", "test")
LANGS = ("de", "en")


def parse_args(argv=None, prog="prepare_wmt14_de_en.sh", description=__doc__, vocab_size=32000, max_len=250,
               raw_help="WMT14 archives / extracted files, or a plain corpus; default: download the WMT14 archives"):
    parser = argparse.ArgumentParser(prog=prog, description=description.splitlines()[0])
    parser.add_argument("out", help="output directory (new, empty, or an earlier run of this script)")
    parser.add_argument("--raw-dir", help=raw_help)
    parser.add_argument("--vocab-size", type=int, default=vocab_size, help="joint sentencepiece vocabulary")
    parser.add_argument("--spm-sample", type=int, default=1_000_000,
                        help="sentences sampled to train sentencepiece (default 1M: its trainer holds the "
                             "sample, and took 7.6 GB for 2M sentences of 175 bytes)")
    parser.add_argument("--max-len", type=int, default=max_len,
                        help="drop training pairs longer (WMT14: sentencepiece pieces; IWSLT14: Moses tokens)")
    parser.add_argument("--max-ratio", type=float, default=1.5, help="drop training pairs with a longer length ratio")
    parser.add_argument("--workers", type=int, default=4,
                        help="processes that clean, encode and binarize the text")
    parser.add_argument("--direction", choices=tuple(DIRECTIONS), default="de-en",
                        help="source-target (default de-en; en-de is the direction of Vaswani et al.'s 27.3)")
    args = parser.parse_args(argv, argparse.Namespace(script=prog))
    for option, value, least in (("--vocab-size", args.vocab_size, MIN_VOCABULARY), ("--spm-sample", args.spm_sample, 1),
                                 ("--max-len", args.max_len, 1), ("--max-ratio", args.max_ratio, 1),
                                 ("--workers", args.workers, 1)):
        if not value >= least:
            parser.error(f"{option} {value}: needs at least {least}")
    return args


#: the smallest --vocab-size: sentencepiece's 4 special pieces and a few characters
MIN_VOCABULARY = 16


def settings_of(args):
    return {"raw_dir": str(Path(args.raw_dir).resolve()) if args.raw_dir else "download",
            "vocab_size": args.vocab_size, "spm_sample": args.spm_sample,
            "max_len": args.max_len, "max_ratio": args.max_ratio, "direction": args.direction}


def claim_output(out: Path, settings: dict, script: str = "prepare_wmt14_de_en.sh") -> bool:
    """True if OUT is already prepared with these settings; refuse an OUT of something else."""
    marker = out / "prepare.json"
    if marker.exists():
        state = json.loads(marker.read_text())
        if {"direction": "de-en", **state.get("settings", {})} != settings:  # made before --direction: de-en
            raise RecipeError(f"{out} was prepared with other settings ({state.get('settings')}); "
                              f"use another output directory or delete {out}")
        if state.get("status") == "done":
            return True
    elif out.exists() and not out.is_dir():
        raise RecipeError(f"{out} is a file, not a directory: nothing was written; choose a new or empty output "
                          "directory")
    elif out.exists() and any(out.iterdir()):
        raise RecipeError(f"{out} is not empty and was not made by this script (no prepare.json); "
                          "nothing was written: choose a new or empty output directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RecipeError(f"cannot create the output directory {out} ({error.strerror}): nothing was written; "
                          "choose a directory that can be made") from None
    write_text_atomically(marker, json.dumps({"status": "in progress", "settings": settings, "script": script}, indent=1))
    return False


class SourceFinder:
    """Finds a file of the benchmark as an extracted file under RAW or as a member of its archive."""

    def __init__(self, raw: Path, benchmark: str = "WMT14"):
        self.raw, self.benchmark = raw, benchmark

    def read_lines(self, archive: str, member: str):
        """The lines of a (small) file: the segments of an .sgm/.xml file, else its lines."""
        found = self._extracted(member)
        return self._decode(found.read_bytes() if found else self._member_bytes(archive, member), Path(member).name)

    def path(self, archive: str, member: str, scratch) -> Path:
        """The file itself: extracted under RAW, else copied out of its archive into `scratch`
        (a stream, for the training files' gigabytes)."""
        found = self._extracted(member)
        if found:
            return found
        if not (self.raw / archive).is_file():
            self._missing(archive, member)
        with tarfile.open(self.raw / archive) as tar:
            info = self._member(tar, member)
            target = Path(scratch) / Path(member).name
            with tar.extractfile(info) as source, target.open("wb") as copy:
                shutil.copyfileobj(source, copy, 1 << 24)
        return target

    def _extracted(self, member: str):
        """The member as a file under RAW, or as a named pipe there (read once, as a stream)."""
        return next((place for place in (self.raw / member, self.raw / Path(member).name)
                     if place.exists() and not place.is_dir()), None)

    def _member_bytes(self, archive: str, member: str) -> bytes:
        if not (self.raw / archive).is_file():
            self._missing(archive, member)
        with tarfile.open(self.raw / archive) as tar:
            return tar.extractfile(self._member(tar, member)).read()

    def _member(self, tar, member: str):
        name = Path(member).name
        for info in tar.getmembers():
            if info.isfile() and (info.name.lstrip("./") == member or Path(info.name).name == name):
                return info
        self._missing(tar.name, member)

    def _missing(self, archive: str, member: str):
        name = Path(member).name
        looked = f"{self.raw / member}, {self.raw / name}, and inside {self.raw / Path(archive).name}"
        raise RecipeError(f"missing {self.benchmark} file {name}: looked at {looked}")

    @staticmethod
    def _decode(data: bytes, name: str):
        text = data.decode("utf-8", errors="replace")
        if name.endswith((".sgm", ".xml")):
            return [html.unescape(m) for m in re.findall(r"<seg[^>]*>(.*?)</seg>", text)]
        return text_lines(text)


def is_plain_corpus(raw: Path) -> bool:
    return all((raw / f"{split}.{lang}").is_file() for split in SPLITS for lang in LANGS)


def parallel_lines(de_path: Path, en_path: Path):
    """(German line, English line) pairs of two files, read a line at a time (lines end at
    "\\n" only, as Moses' scripts read them); files of unequal length raise RecipeError."""
    if de_path.resolve() == en_path.resolve() or os.path.samefile(de_path, en_path):
        raise RecipeError(f"{de_path} and {en_path} are the same file: the German and the English side of a "
                          "corpus must be two files")
    with open_text(de_path) as de, open_text(en_path) as en:
        for number, (s, t) in enumerate(itertools.zip_longest(de, en), 1):
            if s is None or t is None:
                longer, shorter = (de_path, en_path) if t is None else (en_path, de_path)
                raise RecipeError(f"{shorter} has {number - 1} lines but {longer} has more")
            yield s.rstrip("\n"), t.rstrip("\n")


def open_text(path: Path):
    return open(path, encoding="utf-8", errors="replace", newline="\n")


def read_corpus(raw: Path, direction: str, scratch: Path):
    """split -> iterable of (German, English) pairs, from a plain corpus or the WMT14 files (the
    test set of `direction`); the training pairs are streamed (an archive's members are copied
    out into `scratch` first)."""
    if is_plain_corpus(raw):
        return {split: parallel_lines(raw / f"{split}.de", raw / f"{split}.en") for split in SPLITS}
    finder = SourceFinder(raw)
    train = itertools.chain.from_iterable(parallel_lines(finder.path(archive, de, scratch), finder.path(archive, en, scratch))
                                          for archive, de, en in WMT14_FILES["train"])
    corpus = {"train": train}
    for split, files in (("valid", WMT14_FILES["valid"]), ("test", [WMT14_TEST[direction]])):
        pairs = []
        for archive, de_member, en_member in files:
            de_lines, en_lines = finder.read_lines(archive, de_member), finder.read_lines(archive, en_member)
            check_parallel(de_member, de_lines, en_member, en_lines)
            pairs += zip(de_lines, en_lines)
        corpus[split] = pairs
    return corpus


def check_parallel(de_name: str, de, en_name: str, en) -> None:
    """Raise RecipeError unless the German and the English file have as many lines."""
    if len(de) != len(en):
        raise RecipeError(f"{de_name} has {len(de)} lines but {en_name} has {len(en)}")


def download(out: Path) -> Path:
    target = out / "downloads"
    target.mkdir(parents=True, exist_ok=True)
    for name, url in WMT14_ARCHIVES.items():
        if not (target / name).exists():
            print(f"[prepare] downloading {url}", flush=True)
            urllib.request.urlretrieve(url, target / f"{name}.part")
            (target / f"{name}.part").rename(target / name)
    return target


def clean_pairs(de, en, max_len, max_ratio, lengths=None):
    """Drop empty pairs, pairs over max_len and pairs with a length ratio over max_ratio. A
    pair's lengths are its whitespace-separated words, or `lengths` ((German lengths, English
    lengths), e.g. Moses tokens) where given."""
    de, en = [" ".join(s.split()) for s in de], [" ".join(t.split()) for t in en]
    lengths = lengths or ([len(s.split()) for s in de], [len(t.split()) for t in en])
    kept = [(s, t) for s, t, ls, lt in zip(de, en, *lengths) if within_limits(ls, lt, max_len, max_ratio)]
    return [p[0] for p in kept], [p[1] for p in kept]


def within_limits(source_length: int, target_length: int, max_len: int, max_ratio: float) -> bool:
    """clean-corpus-n.perl's test: both sides 1..max_len long, their ratio at most max_ratio."""
    shorter, longer = sorted((source_length, target_length))
    return shorter >= 1 and longer <= max_len and longer <= max_ratio * shorter


#: the characters at least one of Moses' punctuation rules needs to change a line (sacremoses
#: 0.2's MosesPunctNormalizer: quotes, dashes, brackets, no-break spaces, ...): a line with none
#: of them, and no run of spaces, is left as it is without running the 45 rules
PUNCTUATION_TRIGGERS = re.compile("[\r()%:;`'\"\u201e\u201c\u201d\u2013\u2014\u00b4\u2018\u2019\u201a\u2026\u00ab\u00bb\u00a0]|  ")
_normalizers = {}


def normalize(line: str, language: str) -> str:
    """As fairseq's WMT14 script: Moses' normalize-punctuation.perl (sacremoses), then
    remove-non-printing-char.perl (every character of Unicode category C a space), then one
    space between words."""
    if PUNCTUATION_TRIGGERS.search(line):
        if language not in _normalizers:
            from sacremoses import MosesPunctNormalizer
            _normalizers[language] = MosesPunctNormalizer(lang=language)
        line = _normalizers[language].normalize(line)
    if not line.isprintable():  # a character of category C, Z (but ' ') is there
        line = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in line)
    return " ".join(line.split())


def normalized_chunk(pairs, languages=("de", "en")):
    """The (German, English) pairs with the sides of `languages` normalized."""
    return [tuple(normalize(line, lang) if lang in languages else line for line, lang in zip(pair, LANGS))
            for pair in pairs]


class PairWriter:
    """Writes (German, English) lines to two files (pair_writers gives their temporaries)."""

    def __init__(self, paths):
        self.files = [open(path, "w", encoding="utf-8", newline="\n") for path in paths]
        self.count = 0

    def write(self, pairs) -> None:
        for file, lines in zip(self.files, zip(*pairs) if pairs else ((), ())):
            file.write("".join(line + "\n" for line in lines))
        self.count += len(pairs)

    def close(self) -> None:
        for file in self.files:
            file.close()  # its last buffer written: a full disk may show only here


@contextlib.contextmanager
def pair_writers(*prefixes: Path):
    """PairWriters of PREFIX.de and PREFIX.en for each prefix, written through temporaries that
    replace every file together when the block ends, and are removed when it fails (a full disk
    named in one line: writing_together)."""
    paths = [prefix.with_name(f"{prefix.name}.{lang}") for prefix in prefixes for lang in LANGS]
    with writing_together(*paths) as temporaries:
        writers = []
        try:
            for first in range(0, len(temporaries), len(LANGS)):
                writers.append(PairWriter(temporaries[first:first + len(LANGS)]))
            yield writers
        finally:
            for writer in writers:
                writer.close()


def write_pairs(prefix: Path, batches) -> int:
    """Every batch of pairs in `batches` into PREFIX.{de,en} (pair_writers); returns the pairs
    written."""
    with pair_writers(prefix) as (writer,):
        for batch in batches:
            writer.write(batch)
    return writer.count


def train_sentencepiece(files, spm_dir: Path, vocab_size: int, sample: int):
    """One joint unigram model on `sample` sentences drawn from `files` (sentencepiece's own
    reservoir sampling, seeded: the whole text is never in memory), trained in a process of its
    own, so that the gigabytes its trainer takes go back when it ends (the encoding workers,
    forked afterwards, do not start from them). spm.model and spm.vocab are replaced together,
    and only by a model that loads whole (sentencepiece writes a part of one on a full disk
    without a word)."""
    model = spm_dir / "spm.model"
    with writing_together(model, spm_dir / "spm.vocab") as temporaries, worker_pool(1) as pool:
        prefix = spm_dir / "spm.partial"
        try:
            pool.apply(train_unigram, (",".join(map(str, files)), str(prefix), vocab_size, sample))
            for written, temporary in zip((".model", ".vocab"), temporaries):
                os.replace(f"{prefix}{written}", temporary)
        finally:
            for written in (".model", ".vocab"):
                Path(f"{prefix}{written}").unlink(missing_ok=True)
        check_whole_model(temporaries[0])
    return model


def train_unigram(files: str, prefix: str, vocab_size: int, sample: int) -> None:
    import sentencepiece as spm
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        input=files, model_prefix=prefix, vocab_size=vocab_size, character_coverage=1.0, model_type="unigram",
        hard_vocab_limit=False, input_sentence_size=sample, shuffle_input_sentence=True, minloglevel=2)


def check_whole_model(path: Path) -> None:
    """OSError unless the sentencepiece model at `path` loads."""
    import sentencepiece as spm
    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as error:
        raise OSError(f"sentencepiece wrote {path.stat().st_size} bytes of its model, which do not load "
                      f"({str(error).splitlines()[0]})") from None


_sentencepiece = None


def load_sentencepiece(model: str) -> None:
    """A worker's sentencepiece model (Pool initializer)."""
    global _sentencepiece
    import sentencepiece as spm
    _sentencepiece = spm.SentencePieceProcessor(model_file=model)


def encoded_chunk(pairs):
    """[(German, English, German pieces, English pieces)] of pairs, the pieces joined by spaces."""
    de, en = (_sentencepiece.encode(list(side), out_type=str) for side in zip(*pairs))
    return [(s, t, " ".join(ps), " ".join(pt)) for s, t, ps, pt in zip(*zip(*pairs), de, en)]


def encode_split(out: Path, split: str, model: Path, workers: int, limits=None):
    """OUT/spm/SPLIT.{de,en}: OUT/raw/SPLIT.{de,en} encoded with the model; with `limits`
    (max_len, max_ratio) only the pairs within them (in pieces) are kept, in both folders.
    Returns (pairs kept, pairs read)."""
    raw = out / "raw" / split
    pairs = parallel_lines(raw.with_name(f"{split}.de"), raw.with_name(f"{split}.en"))
    read = 0
    with pair_writers(out / "spm" / split, *([raw.with_name(f"{split}.kept")] if limits else [])) as writers:
        for chunk in map_chunks(encoded_chunk, chunks(pairs), workers, load_sentencepiece, (str(model),)):
            read += len(chunk)
            kept = [pair for pair in chunk if limits is None or
                    within_limits(len(pair[2].split()), len(pair[3].split()), *limits)]
            writers[0].write([pair[2:] for pair in kept])
            if limits:
                writers[1].write([pair[:2] for pair in kept])
    if limits:
        for lang in LANGS:
            os.replace(raw.with_name(f"{split}.kept.{lang}"), raw.with_name(f"{split}.{lang}"))
    return writers[0].count, read


def main(argv=None):
    args = parse_args(argv)
    out, settings = start(args)
    if settings is None:
        return
    raw = Path(args.raw_dir).resolve() if args.raw_dir else download(out)
    print(f"[prepare] reading {raw}", flush=True)
    scratch = out / "extracted"  # the training files copied out of their archives, removed at the end
    scratch.mkdir(exist_ok=True)
    corpus = read_corpus(raw, args.direction, scratch)
    source = DIRECTIONS[args.direction][0]
    finish(out, settings, args, corpus, normalized={"train": LANGS, "valid": LANGS, "test": (source,)},
           limits=(args.max_len, args.max_ratio))
    shutil.rmtree(scratch)


def start(args):
    """(OUT, settings), or (OUT, None) when OUT is already prepared with these settings."""
    out = Path(args.out).resolve()
    settings = settings_of(args)
    if args.raw_dir and not Path(args.raw_dir).is_dir():
        raise RecipeError(f"--raw-dir {args.raw_dir} is not a directory")
    if claim_output(out, settings, args.script):
        print(f"[prepare] {out} is already prepared with these settings: nothing to do")
        if args.script == "prepare_wmt14_de_en.sh" and "unknown_tokens" not in json.loads(
                (out / "prepare.json").read_text()):
            print(f"[prepare] warning: {out} was prepared before the test set's source was cleaned as the training "
                  "text is: characters such as „ “ – in it reach the model as <unk>. Prepare into a new directory "
                  "for a cleaned test set", flush=True)
        return out, None
    return out, settings


def finish(out: Path, settings: dict, args, texts: dict, normalized=None, limits=None) -> None:
    """Write texts (split -> iterable of (German, English) pairs; the sides `normalized` names
    for a split, {split: languages}, normalized as Moses does) under OUT/raw, train one joint
    sentencepiece model on the training text, encode every split under OUT/spm (the training
    pairs kept within `limits`, (max_len, max_ratio) in pieces, where given), binarize them into
    OUT/bin as fairseq-preprocess does (recipes/data/binarize.py), say the share of <unk> in each
    split's source, and mark OUT done. Every step streams, --workers processes at a time."""
    normalized = normalized or {}
    for sub in ("raw", "spm"):
        (out / sub).mkdir(exist_ok=True)
    for split, pairs in texts.items():
        languages = normalized.get(split, ())
        batches = map_chunks(functools.partial(normalized_chunk, languages=languages), chunks(pairs),
                             args.workers) if languages else chunks(pairs)
        count = write_pairs(out / "raw" / split, batches)
        if count == 0:
            raise RecipeError(f"the {split} split is empty (0 pairs read from {args.raw_dir or 'the download'}): "
                              "there is nothing to train or evaluate on; check RAW")
        print(f"[prepare] {split}: {count} pairs read" + normalized_text(languages), flush=True)
    print(f"[prepare] training a joint sentencepiece model (vocab {args.vocab_size}, on at most "
          f"{args.spm_sample} sentences)", flush=True)
    model = train_sentencepiece([out / "raw" / f"train.{lang}" for lang in LANGS], out / "spm", args.vocab_size,
                                args.spm_sample)
    for split in texts:
        kept, read = encode_split(out, split, model, args.workers, limits if split == "train" else None)
        if split == "train" and limits:
            cleaning = f"1-{limits[0]} pieces a side, length ratio at most {limits[1]}"
            if kept == 0:
                raise RecipeError(f"the cleaning kept 0 of the {read} training pairs ({cleaning}): loosen --max-len "
                                  "or --max-ratio")
            print(f"[prepare] train: {kept} of {read} pairs kept after cleaning ({cleaning})", flush=True)
    print("[prepare] binarizing as fairseq-preprocess --joined-dictionary does (recipes/data/binarize.py)", flush=True)
    source = DIRECTIONS[args.direction][0]
    binarized = preprocess(out / "spm", out / "bin", *DIRECTIONS[args.direction], tuple(texts), args.workers)
    print(f"[prepare] <unk> in the source ({source}): " + ", ".join(
        f"{split} {unknown_share(binarized[split][source])}" for split in texts), flush=True)
    unknown = {split: {lang: [counts.unknown, counts.tokens] for lang, counts in languages.items()}
               for split, languages in binarized.items()}
    write_text_atomically(out / "prepare.json", json.dumps(
        {"status": "done", "settings": settings, "script": args.script, "unknown_tokens": unknown}, indent=1))
    print(f"[prepare] done: {out / 'bin'}")


def normalized_text(languages) -> str:
    """', normalized' (both sides), ', de normalized' (one) or ''."""
    if not languages:
        return ""
    return ", normalized" if set(languages) == set(LANGS) else f", {'/'.join(languages)} normalized"


def unknown_share(counts) -> str:
    """'0.012% <unk> (3 of 25000 pieces)' of a binarized side."""
    share = 100 * counts.unknown / counts.tokens if counts.tokens else 0.0
    return f"{share:.3f}% ({counts.unknown} of {counts.tokens} pieces)"


if __name__ == "__main__":
    run_main(main, "prepare_wmt14_de_en.sh", sigterm_interrupts=True)
