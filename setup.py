"""fairseq_normmatters: L1 / L-inf / top-k layer norms and bounded weight norm for fairseq."""

import sys

from setuptools import find_packages, setup

if not (3, 9) <= sys.version_info[:2] <= (3, 12):
    sys.exit(
        "fairseq_normmatters supports Python 3.9 to 3.12 (fairseq 0.12.2 on 3.9-3.10, "
        f"ve-fairseq 0.12.3 on 3.11-3.12); this is Python {sys.version.split()[0]}."
    )

setup(
    name="fairseq_normmatters",
    version="0.1.0",
    description='The normalization schemes of "Norm matters" (Hoffer et al., 2018) as a fairseq plugin',
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_normmatters", "fairseq_normmatters.*"]),
    package_data={"fairseq_normmatters.kernels": ["native_rows.cpp"]},  # built on first use
    python_requires=">=3.9,<3.13",
    install_requires=[
        "torch>=2.6",  # the first torch whose torch.load is weights-only by default
        "ve-fairseq==0.12.3; python_version >= '3.11'",
        "fairseq==0.12.2; python_version < '3.11'",
        "sacrebleu>=2",
        "sentencepiece",
    ],
    extras_require={"test": ["pytest", "pytest-xdist"], "plot": ["matplotlib"]},
    license="MIT",
)
