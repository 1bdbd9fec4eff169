"""prepare streams the corpus (its memory does not grow with it) and cleans it as fairseq's
prepare-wmt14en2de.sh does: Moses' punctuation normalization, non-printing characters removed,
the length filter in pieces."""

import random
import signal

import pytest

from fairseq_normmatters.recipes.common import RecipeError
from fairseq_normmatters.recipes.data.chunked import CHUNK as CHUNK_PAIRS, STOPPING, chunks, map_chunks, worker_pool
from fairseq_normmatters.recipes.data.prepare import normalize, normalized_chunk, parallel_lines, within_limits
from test_recipes import DEMO


def test_normalization_is_moses_normalize_punctuation_then_remove_non_printing_char():
    assert normalize("„Hallo“ – sagte er ( laut ) : ja…", "de") == '"Hallo" - sagte er (laut): ja...'
    assert normalize("It’s 50 % «off»\u00a0!", "en") == "It's 50% \"off\"!"
    assert normalize("a\u200bb\x07c\td  e", "en") == "a b c d e"  # \u200b (Cf), \x07 (Cc): a space each


def test_the_shortcut_past_lines_without_punctuation_rules_changes_nothing():
    """normalize skips Moses' 45 rules for a line with none of their characters: on every kind
    of line the result is what the rules give, then one space between words."""
    from sacremoses import MosesPunctNormalizer
    rng = random.Random(0)
    lines = (DEMO / "train.de").read_text(encoding="utf-8").splitlines()[:300]
    marks = ["„", "“", "”", "(", ")", " :", " ;", "%", "–", "—", "’", "‘", "´", "`", "''", "«", "»", "\u00a0", "…",
             "\r", "  ", '"', "'"]
    lines += [line.replace(" ", rng.choice(marks), 2) for line in lines[:200]]
    for lang in ("de", "en"):
        moses = MosesPunctNormalizer(lang=lang)
        assert [normalize(line, lang) for line in lines] == [" ".join(moses.normalize(line).split()) for line in lines]


def test_the_length_filter_is_clean_corpus_n():
    assert within_limits(1, 1, 250, 1.5) and within_limits(250, 167, 250, 1.5)
    assert not within_limits(0, 3, 250, 1.5) and not within_limits(251, 250, 250, 1.5)
    assert not within_limits(10, 16, 250, 1.5) and within_limits(10, 15, 250, 1.5)


@pytest.mark.parametrize("workers", [1, 2])
def test_chunks_are_mapped_in_order_with_a_bounded_read_ahead(workers):
    """At most 2 x workers chunks are read ahead of the one given back: the memory of a pass
    does not grow with the corpus (Pool.imap would read all of it first)."""
    consumed = [0]

    def pairs():
        for number in range(10 * CHUNK_PAIRS):
            consumed[0] += 1
            yield f"de {number}", "en"
    given_back = 0
    for chunk in map_chunks(normalized_chunk, chunks(pairs()), workers):
        assert chunk[0][0] == f"de {given_back * CHUNK_PAIRS}" and len(chunk) == CHUNK_PAIRS
        given_back += 1
        assert consumed[0] - given_back * CHUNK_PAIRS <= 2 * workers * CHUNK_PAIRS
    assert given_back == 10


def signal_state(_):
    """(SIGTERM's handler is the default, SIGINT is ignored, either is blocked) in this process."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return (signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
            bool(blocked & STOPPING))


def test_the_pools_workers_die_on_terminate_though_the_recipe_turns_sigterm_into_ctrl_c():
    """prepare's SIGTERM raises KeyboardInterrupt (run_main); workers that inherited that handler
    survived Pool.terminate's SIGTERM when it came as they were forked, and prepare waited for
    them forever (a CI run hung so). The workers take SIGTERM's default and leave Ctrl-C to
    the parent; the parent's mask is restored."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with worker_pool(2) as pool:
            states = pool.map(signal_state, range(4), chunksize=1)
            workers = list(pool._pool)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert states == [(True, True, False)] * 4
    for worker in workers:
        worker.join(timeout=120)
    assert None not in [worker.exitcode for worker in workers]
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & STOPPING


def test_parallel_files_are_read_by_newline_only_and_must_have_as_many_lines(tmp_path):
    (tmp_path / "a.de").write_text("eins\u2028zwei\nDrei\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one two\nthree\n", encoding="utf-8")
    assert list(parallel_lines(tmp_path / "a.de", tmp_path / "a.en")) == [("eins\u2028zwei", "one two"),
                                                                          ("Drei", "three")]
    (tmp_path / "a.en").write_text("one two\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"a.en has 1 lines but .*a.de has more"):
        list(parallel_lines(tmp_path / "a.de", tmp_path / "a.en"))


@pytest.mark.parametrize("workers", [1, 2])
def test_the_binarized_data_is_byte_for_byte_fairseq_preprocess(tmp_path, workers):
    """recipes/data/binarize.py against fairseq-preprocess --joined-dictionary on the same text: words
    of the demo (ties of counts, tokens only in valid/test, an empty line): every dict, .bin and
    .idx file the same bytes."""
    from cli import run
    from fairseq_normmatters.recipes.data.binarize import preprocess
    text = tmp_path / "text"
    text.mkdir()
    for split, start, count in (("train", 0, 3000), ("valid", 3000, 50), ("test", 3050, 50)):
        for lang in ("de", "en"):
            lines = (DEMO / f"train.{lang}").read_text(encoding="utf-8").splitlines()[start:start + count]
            extra = ["", "unseenword " + lines[0]] if split != "train" else [""]
            (text / f"{split}.{lang}").write_text("\n".join(lines + extra) + "\n", encoding="utf-8")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    preprocess(text, ours, "de", "en", ("train", "valid", "test"), workers)
    run("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", text / "train",
        "--validpref", text / "valid", "--testpref", text / "test", "--destdir", theirs, "--joined-dictionary",
        "--workers", "1")
    files = sorted(p.name for p in theirs.iterdir() if p.name != "preprocess.log")
    assert sorted(p.name for p in ours.iterdir()) == files and len(files) == 14
    for name in files:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
