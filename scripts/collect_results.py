#!/usr/bin/env python3
"""Markdown table and loss plot of evaluated runs: see fairseq_normmatters/recipes/report/collect.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fairseq_normmatters.recipes.common import run_main  # noqa: E402
from fairseq_normmatters.recipes.report.collect import main  # noqa: E402

if __name__ == "__main__":
    run_main(main, "collect_results.py")
