"""Check a translation data directory before fairseq reads it, and say what is wrong with it.

fairseq's TranslationTask reads dict.SRC.txt / dict.TGT.txt from the first data path (and
lists it to infer the languages); a missing or wrong path ends in a FileNotFoundError
traceback from inside that code. Importing the plugin makes setup_task (fairseq-train,
-generate, -validate, -interactive) check every data path first and raise one DataDirError
naming the path and what is expected. It reads the directories only; nothing is written.
"""

import functools
import os

EXPECTED = "expected a directory made by fairseq-preprocess holding dict.{}.txt and dict.{}.txt"


class DataDirError(FileNotFoundError):
    """A data path that is missing, not a directory, or lacks fairseq-preprocess's dictionaries."""


def check_data_dirs_before_setup() -> None:
    """Wrap fairseq's TranslationTask.setup_task so that it calls check_data_dirs first (idempotent)."""
    from fairseq.tasks.translation import TranslationTask

    setup = TranslationTask.setup_task.__func__
    if getattr(setup, "checks_data_dirs", False):
        return

    @functools.wraps(setup)
    def setup_task(cls, cfg, **kwargs):
        check_data_dirs(cfg.data, cfg.source_lang, cfg.target_lang)
        return setup(cls, cfg, **kwargs)

    setup_task.checks_data_dirs = True
    TranslationTask.setup_task = classmethod(setup_task)


def check_data_dirs(data: str, source=None, target=None) -> None:
    """Raise DataDirError unless every path of `data` (fairseq's colon-separated shards) is a
    directory and the first, where fairseq reads the dictionaries, holds dict.SOURCE.txt and
    dict.TARGET.txt. Without both languages they are inferred from the file names as fairseq
    does. Remote paths (with "://") are left to fairseq."""
    if "://" in str(data):
        return
    paths = str(data).split(os.pathsep)
    for path in paths:
        if not os.path.isdir(path):
            problem = "is a file, not a directory" if os.path.exists(path) else "does not exist"
            raise DataDirError(f"data directory {path} {problem}; {expected(source, target)}")
    check_dictionary_files(paths[0], source, target)


def check_dictionary_files(path: str, source=None, target=None) -> None:
    """Raise DataDirError unless directory `path` holds the dictionaries of the language pair."""
    from fairseq.data.data_utils import infer_language_pair

    if source is None or target is None:
        source, target = infer_language_pair(path)
        if source is None:
            raise DataDirError(f"data directory {path} holds no file named SPLIT.SRC-TGT.LANG.bin to infer the "
                               f"languages from ({dictionary_files(path)}); {expected(None, None)}, or give "
                               "--source-lang and --target-lang")
    missing = [f"dict.{lang}.txt" for lang in dict.fromkeys((source, target))
               if not os.path.isfile(os.path.join(path, f"dict.{lang}.txt"))]
    if missing:
        raise DataDirError(f"data directory {path} lacks {' and '.join(missing)} ({dictionary_files(path)}); "
                           f"{expected(source, target)}")


def dictionary_files(path: str) -> str:
    """Which dict.*.txt files directory `path` holds, as a phrase."""
    found = sorted(name for name in os.listdir(path) if name.startswith("dict.") and name.endswith(".txt"))
    return f"its dictionary files: {', '.join(found)}" if found else "it holds no dict.*.txt file"


def expected(source, target) -> str:
    """What a data directory must be, with the languages when known."""
    return EXPECTED.format(source or "SRC", target or "TGT")
