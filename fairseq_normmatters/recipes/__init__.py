"""The WMT14 / IWSLT14 de-en pipelines that scripts/*.sh run, in rooms by stage; each room imports
only the rooms below it (docs/architecture.md; tests/test_module_layers.py checks the rules):

    common.py   errors, whole-or-nothing writes, lines, running fairseq's tools, run_main
    data/       prepare: the corpus read, cleaned, sentencepiece, binarized
    run/        one run: its configuration and command, its folder, training, evaluation
    report/     the tables, Welch's test, the curves and the verdict of a comparison
    launch/     where runs run: this machine (local.py) or a SLURM cluster (slurm/)
    compare.py  the comparison: its settings, then a launcher, then the report
"""
