import pytest
import torch

import fairseq_normmatters

# The tests drive fairseq in this process too, as a Python user of fairseq does; the CLI tests
# load the plugin through --user-dir. tests/test_core_without_fairseq.py checks the core alone.
fairseq_normmatters.install_fairseq_plugin()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
