"""fairseq-preprocess --joined-dictionary for text already split into pieces, at the speed of a
corpus of millions of pairs.

fairseq-preprocess encodes a line by setting one element of a torch tensor a token (its
Dictionary.encode_line): 5 minutes for 1M German lines on 2 cores, most of an hour for WMT14.
This writes the same files from the same text with fairseq's own Dictionary and dataset builder:
the joined dictionary counted over the training text of both languages (every line's tokens and
its end of sentence, finalized with fairseq's padding to a multiple of 8), each line's ids a
numpy array (unknown tokens <unk>, </s> appended). tests/test_prepare_streaming.py checks that
dict.*.txt, *.bin and *.idx are byte for byte fairseq-preprocess's.
"""

import itertools
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..common import write_atomically, writing_together
from .chunked import CHUNK, map_chunks

_index = None  # a worker's {token: id} and unknown id (load_index)


def text_chunks(path: Path, size: int = CHUNK):
    """Lists of `size` lines of a text file, read as fairseq reads it (universal newlines)."""
    with open(path, encoding="utf-8") as file:
        while chunk := list(itertools.islice(file, size)):
            yield chunk


def counted_chunk(lines) -> Counter:
    """The tokens of these lines and one end of sentence a line, as fairseq's dictionary counts them."""
    counts = Counter(itertools.chain.from_iterable(line.split() for line in lines))
    counts["</s>"] += len(lines)
    return counts


def joined_dictionary(paths, workers: int):
    """fairseq's Dictionary of the tokens of `paths` (the training text of both languages)."""
    from fairseq.data import Dictionary
    counts = Counter()
    for path in paths:
        for chunk_counts in map_chunks(counted_chunk, text_chunks(path), workers):
            counts.update(chunk_counts)
    dictionary = Dictionary()
    for token, count in sorted(counts.items()):
        dictionary.add_symbol(token, count)
    dictionary.finalize(threshold=-1, nwords=-1, padding_factor=8)
    return dictionary


def load_index(dictionary_file: str) -> None:
    """A worker's token -> id map (Pool initializer)."""
    global _index
    from fairseq.data import Dictionary
    dictionary = Dictionary.load(dictionary_file)
    _index = (dictionary.indices, dictionary.unk_index, dictionary.eos_index)


def encoded_lines(lines):
    """(ids of every line one after the other, each line's length, how many tokens were
    unknown): encode_line's ids, </s> last."""
    indices, unknown, eos = _index
    lengths = np.empty(len(lines), dtype=np.int64)
    ids = []
    for number, line in enumerate(lines):
        tokens = line.split()
        ids.extend(indices.get(token, unknown) for token in tokens)
        ids.append(eos)
        lengths[number] = len(tokens) + 1
    ids = np.array(ids, dtype=np.int32)
    return ids, lengths, int(np.count_nonzero(ids == unknown))


class Binarized(NamedTuple):
    """What binarize wrote: lines, tokens (without the ends of sentence) and unknown tokens."""
    lines: int
    tokens: int
    unknown: int


def binarize(text: Path, dictionary_file: Path, prefix: Path, vocabulary: int, workers: int) -> Binarized:
    """PREFIX.bin and PREFIX.idx (fairseq's mmap dataset) of the lines of `text`, replaced
    together when both are whole (writing_together)."""
    import torch
    from fairseq.data import indexed_dataset
    lines = tokens = unknown = 0
    with writing_together(Path(f"{prefix}.bin"), Path(f"{prefix}.idx")) as (data, index):
        builder = indexed_dataset.make_builder(str(data), impl="mmap", vocab_size=vocabulary)
        for ids, lengths, unknowns in map_chunks(encoded_lines, text_chunks(text), workers, load_index,
                                                 (str(dictionary_file),)):
            for line in np.split(ids, np.cumsum(lengths)[:-1]):
                builder.add_item(torch.from_numpy(line))
            lines, tokens = lines + len(lengths), tokens + int(lengths.sum()) - len(lengths)
            unknown += unknowns
        builder.finalize(str(index))
    return Binarized(lines, tokens, unknown)


def preprocess(spm_dir: Path, destination: Path, source: str, target: str, splits, workers: int):
    """DESTINATION/dict.{source,target}.txt and SPLIT.SOURCE-TARGET.LANG.{bin,idx} of each split
    from SPM_DIR/SPLIT.LANG, as `fairseq-preprocess --joined-dictionary` writes them; returns
    {split: {language: Binarized}}."""
    destination.mkdir(parents=True, exist_ok=True)
    dictionary = joined_dictionary([spm_dir / f"train.{lang}" for lang in (source, target)], workers)
    for lang in (source, target):
        write_atomically(destination / f"dict.{lang}.txt", lambda temporary: dictionary.save(str(temporary)))
    return {split: {lang: binarize(spm_dir / f"{split}.{lang}", destination / f"dict.{source}.txt",
                                   destination / f"{split}.{source}-{target}.{lang}", len(dictionary), workers)
                    for lang in (source, target)} for split in splits}
