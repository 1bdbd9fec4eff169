"""How scripts/test.sh hands the tests to its workers (conftest.py): the modules whose tests share
trained or prepared fixtures stay whole, every other test is a unit of its own."""

from pathlib import Path

from conftest import MODULES_RUN_WHOLE, ModulesWholeTestsOneByOne


def test_every_module_run_whole_exists():
    assert all((Path(__file__).parent / name).is_file() for name in MODULES_RUN_WHOLE)


def test_a_module_run_whole_is_one_unit_and_any_other_test_its_own():
    split = object.__new__(ModulesWholeTestsOneByOne)._split_scope  # reads no state of the scheduler
    assert split("tests/test_resume.py::test_resumed_run[bwn-2]") == "tests/test_resume.py"
    assert split("tests/test_resume.py::test_interrupted_run") == "tests/test_resume.py"
    assert split("tests/test_norms.py::test_l1_scale[float64]") == "tests/test_norms.py::test_l1_scale[float64]"
