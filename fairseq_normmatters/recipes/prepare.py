"""Prepare WMT14 de->en or en->de (or any plain parallel corpus) for fairseq: clean, sentencepiece, binarize.

    scripts/prepare_wmt14_de_en.sh [--raw-dir RAW] [--vocab-size 32000] [--direction de-en|en-de] OUT

RAW holds the official WMT14 archives as downloaded, or their extracted files, or a plain
corpus (train/valid/test.{de,en}, as the demo's). Without --raw-dir the archives are
downloaded into OUT/downloads first. OUT receives:

    raw/{train,valid,test}.{de,en}   cleaned text (test: the full newstest2014 of the direction,
                                     its source and reference untouched: de-en the German source
                                     and English reference files, en-de the English source and
                                     German reference)
    spm/spm.model, spm/*.{de,en}     one joint sentencepiece model and the encoded text
    bin/                             fairseq-preprocess --joined-dictionary output, source and
                                     target as --direction says (default de-en)
    prepare.json                     the settings and "done" once finished
"""

import argparse
import html
import json
import random
import re
import tarfile
import urllib.request
from pathlib import Path

from . import DIRECTIONS, RecipeError, run_main, run_tool, write_text_atomically

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
    parser.add_argument("--spm-sample", type=int, default=2_000_000,
                        help="sentences sampled to train sentencepiece (keeps memory bounded)")
    parser.add_argument("--max-len", type=int, default=max_len, help="drop training pairs longer (words)")
    parser.add_argument("--max-ratio", type=float, default=1.5, help="drop training pairs with a longer length ratio")
    parser.add_argument("--workers", type=int, default=4, help="fairseq-preprocess workers")
    parser.add_argument("--direction", choices=tuple(DIRECTIONS), default="de-en",
                        help="source-target (default de-en; en-de is the direction of Vaswani et al.'s 27.3)")
    return parser.parse_args(argv, argparse.Namespace(script=prog))


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
    elif out.exists() and any(out.iterdir()):
        raise RecipeError(f"{out} is not empty and was not made by this script (no prepare.json); "
                          "nothing was written: choose a new or empty output directory")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(marker, json.dumps({"status": "in progress", "settings": settings, "script": script}, indent=1))
    return False


class SourceFinder:
    """Finds a file of the benchmark as an extracted file under RAW or as a member of its archive."""

    def __init__(self, raw: Path, benchmark: str = "WMT14"):
        self.raw, self.benchmark = raw, benchmark

    def read_lines(self, archive: str, member: str):
        name = Path(member).name
        places = [self.raw / member, self.raw / name]
        for place in places:
            if place.is_file():
                return self._decode(place.read_bytes(), name)
        archive_path = self.raw / archive
        if archive_path.is_file():
            with tarfile.open(archive_path) as tar:
                for info in tar.getmembers():
                    if info.isfile() and (info.name.lstrip("./") == member or Path(info.name).name == name):
                        return self._decode(tar.extractfile(info).read(), name)
        looked = ", ".join(str(p) for p in places) + f", and inside {archive_path}"
        raise RecipeError(f"missing {self.benchmark} file {name}: looked at {looked}")

    @staticmethod
    def _decode(data: bytes, name: str):
        text = data.decode("utf-8", errors="replace")
        if name.endswith((".sgm", ".xml")):
            return [html.unescape(m) for m in re.findall(r"<seg[^>]*>(.*?)</seg>", text)]
        return text.splitlines()


def is_plain_corpus(raw: Path) -> bool:
    return all((raw / f"{split}.{lang}").is_file() for split in SPLITS for lang in LANGS)


def read_corpus(raw: Path, direction: str = "de-en"):
    """split -> (German lines, English lines), from a plain corpus or the WMT14 files (the test
    set of `direction`)."""
    if is_plain_corpus(raw):
        return {split: tuple((raw / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
                             for lang in LANGS) for split in SPLITS}
    finder = SourceFinder(raw)
    corpus = {}
    for split, files in {**WMT14_FILES, "test": [WMT14_TEST[direction]]}.items():
        de, en = [], []
        for archive, de_member, en_member in files:
            de_lines, en_lines = finder.read_lines(archive, de_member), finder.read_lines(archive, en_member)
            check_parallel(de_member, de_lines, en_member, en_lines)
            de += de_lines
            en += en_lines
        corpus[split] = (de, en)
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
    """Drop empty pairs, pairs over max_len words and pairs with a length ratio over max_ratio.
    A pair's lengths are its whitespace-separated words, or `lengths` ((German lengths, English
    lengths), e.g. Moses tokens) where given."""
    de, en = [" ".join(s.split()) for s in de], [" ".join(t.split()) for t in en]
    lengths = lengths or ([len(s.split()) for s in de], [len(t.split()) for t in en])
    kept = [(s, t) for s, t, ls, lt in zip(de, en, *lengths)
            if ls and lt and ls <= max_len and lt <= max_len and max(ls, lt) <= max_ratio * min(ls, lt)]
    return [p[0] for p in kept], [p[1] for p in kept]


def write_lines(path: Path, lines):
    write_text_atomically(path, "".join(line + "\n" for line in lines))


def train_sentencepiece(train_de, train_en, spm_dir: Path, vocab_size: int, sample: int):
    import sentencepiece as spm
    lines = train_de + train_en
    if len(lines) > sample:
        lines = random.Random(0).sample(lines, sample)
    sample_file = spm_dir / "spm_input.txt"
    write_lines(sample_file, lines)
    spm.SentencePieceTrainer.train(
        input=str(sample_file), model_prefix=str(spm_dir / "spm"), vocab_size=vocab_size,
        character_coverage=1.0, model_type="unigram", hard_vocab_limit=False,
        input_sentence_size=sample, shuffle_input_sentence=True, minloglevel=2)
    sample_file.unlink()
    return spm.SentencePieceProcessor(model_file=str(spm_dir / "spm.model"))


def main(argv=None):
    args = parse_args(argv)
    out, settings = start(args)
    if settings is None:
        return
    raw = Path(args.raw_dir).resolve() if args.raw_dir else download(out)
    print(f"[prepare] reading {raw}", flush=True)
    corpus = read_corpus(raw, args.direction)
    train = clean_pairs(*corpus["train"], args.max_len, args.max_ratio)
    print(f"[prepare] train: {len(train[0])} of {len(corpus['train'][0])} pairs kept after cleaning", flush=True)
    finish(out, settings, args, {"train": train, "valid": clean_pairs(*corpus["valid"], 10**9, float("inf")),
                                 "test": corpus["test"]})


def start(args):
    """(OUT, settings), or (OUT, None) when OUT is already prepared with these settings."""
    out = Path(args.out).resolve()
    settings = settings_of(args)
    if args.raw_dir and not Path(args.raw_dir).is_dir():
        raise RecipeError(f"--raw-dir {args.raw_dir} is not a directory")
    if claim_output(out, settings, args.script):
        print(f"[prepare] {out} is already prepared with these settings: nothing to do")
        return out, None
    return out, settings


def finish(out: Path, settings: dict, args, texts: dict) -> None:
    """Write texts (split -> (German lines, English lines)) under OUT/raw, train one joint
    sentencepiece model on the training text, encode every split under OUT/spm, binarize it
    into OUT/bin with fairseq-preprocess and mark OUT done."""
    for sub in ("raw", "spm"):
        (out / sub).mkdir(exist_ok=True)
    for split, pair in texts.items():
        for lang, lines in zip(LANGS, pair):
            write_lines(out / "raw" / f"{split}.{lang}", lines)
    print(f"[prepare] training a joint sentencepiece model (vocab {args.vocab_size})", flush=True)
    sp = train_sentencepiece(*texts["train"], out / "spm", args.vocab_size, args.spm_sample)
    for split, pair in texts.items():
        for lang, lines in zip(LANGS, pair):
            write_lines(out / "spm" / f"{split}.{lang}", (" ".join(p) for p in sp.encode(lines, out_type=str)))
    print("[prepare] fairseq-preprocess", flush=True)
    source, target = DIRECTIONS[args.direction]
    run_tool("fairseq-preprocess", "--source-lang", source, "--target-lang", target,
             "--trainpref", out / "spm" / "train", "--validpref", out / "spm" / "valid",
             "--testpref", out / "spm" / "test", "--destdir", out / "bin", "--joined-dictionary",
             "--workers", args.workers, quiet=True)
    write_text_atomically(out / "prepare.json",
                          json.dumps({"status": "done", "settings": settings, "script": args.script}, indent=1))
    print(f"[prepare] done: {out / 'bin'}")


if __name__ == "__main__":
    run_main(main, "prepare_wmt14_de_en.sh")
