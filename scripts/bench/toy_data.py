"""A learnable toy translation task for the tests and benchmarks: reverse the words and map each."""

import random
from pathlib import Path

DEFAULT_SPLITS = (("train", 600), ("valid", 60), ("test", 60))


def write_parallel_text(directory, splits=DEFAULT_SPLITS, vocab_size=40, lengths=(3, 8), seed=0,
                        source="de", target="en"):
    """Write SPLIT.{source,target} files under `directory`; target = reversed, mapped source."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    mapping = {w: f"t{(i * 7) % vocab_size}" for i, w in enumerate(vocab)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in splits:
        with open(directory / f"{split}.{source}", "w") as src, open(directory / f"{split}.{target}", "w") as tgt:
            for _ in range(n):
                words = [rng.choice(vocab) for _ in range(rng.randint(*lengths))]
                src.write(" ".join(words) + "\n")
                tgt.write(" ".join(mapping[w] for w in reversed(words)) + "\n")
    return directory
