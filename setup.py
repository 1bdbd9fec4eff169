"""fairseq_normmatters: L1 / L-inf / top-k layer norms and bounded weight norm for fairseq."""

import sys

from setuptools import find_packages, setup

if not (3, 11) <= sys.version_info[:2] <= (3, 12):
    sys.exit(
        "fairseq_normmatters supports Python 3.11 and 3.12 (ve-fairseq 0.12.3 has wheels for those; "
        f"fairseq 0.12.2 does not import on 3.11+ and 3.9-3.10 are past their end of life); "
        f"this is Python {sys.version.split()[0]}."
    )

setup(
    name="fairseq_normmatters",
    version="0.1.0",
    description='The normalization schemes of "Norm matters" (Hoffer et al., 2018) as a fairseq plugin',
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_normmatters", "fairseq_normmatters.*"]),
    package_data={"fairseq_normmatters.kernels": ["native_rows.cpp"]},  # built on first use
    python_requires=">=3.11,<3.13",
    install_requires=[
        # 2.6 made torch.load weights-only by default; 2.7 is the first whose PyPI wheels have the
        # C++ ABI that ve-fairseq's extensions are built with (2.6's inductor also miscompiles
        # the compiled backend's column sum: dL/dgamma off by up to 70%)
        "torch>=2.7",
        "ve-fairseq==0.12.3",
        "sacrebleu>=2",
        "sacremoses",  # tokenized BLEU as papers compute it (Moses tokenization)
        "sentencepiece",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "transformers>=4.46",
                 # the Triton kernels' tests (in Triton's interpreter where there is no GPU)
                 "triton; platform_system == 'Linux' and platform_machine == 'x86_64'"],
        "plot": ["matplotlib"],
        # compare.sh --launcher slurm: each run a SLURM job through submitit's executor, job pickles
        # and runner; the sbatch script is the package's own. Tested with 1.5.4 (the suite's SLURM
        # tests on a real one-node cluster)
        "slurm": ["submitit>=1.5.4,<1.6"],
    },
    license="MIT",
)
