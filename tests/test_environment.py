"""The environment the package was installed into: every installed distribution imports (a
package that cannot, such as a torchaudio built for another torch, breaks every library that
imports it), and the promised Python and torch are the ones running."""

import json
import subprocess
import sys

import torch
from packaging.version import Version

#: Import every top-level module of every installed distribution, after setuptools (which must come
#: before distutils) and torch (which loads the libraries that torch extensions such as fairseq's
#: link against); print {module: error} for those that fail.
IMPORT_ALL = """
import importlib, json
from importlib.metadata import packages_distributions
import setuptools, torch
failed = {}
for module, distributions in sorted(packages_distributions().items()):
    if module.startswith("_") or not module.isidentifier():
        continue
    try:
        importlib.import_module(module)
    except BaseException as error:
        failed[module] = f"{', '.join(distributions)}: {type(error).__name__}: {str(error)[:300]}"
print(json.dumps(failed))
"""


def test_every_installed_distribution_imports():
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads(result.stdout.strip().splitlines()[-1])
    assert failed == {}, f"installed but not importable: {failed}"


def test_python_and_torch_are_ones_the_package_promises():
    assert (3, 11) <= sys.version_info[:2] <= (3, 12)
    assert Version(torch.__version__.split("+")[0]) >= Version("2.7")
