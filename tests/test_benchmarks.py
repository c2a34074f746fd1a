"""Every benchmark result names the CPU it ran on: timings from other CPUs are not comparable.

The benchmarks themselves are never run here (they take minutes to hours); this checks what
they leave behind and the one helper that names the machine.
"""

from __future__ import annotations

import importlib.util
import platform
import re

import pytest

from tests.conftest import REPO_ROOT

RESULTS = sorted((REPO_ROOT / "benchmarks" / "results").glob("*.md"))
# a CPU model as /proc/cpuinfo or lscpu names it, or the honest note of a table that did not record one
NAMES_ITS_CPU = re.compile(r"EPYC|Xeon|Intel|AMD|Ryzen|Apple|Neoverse|Graviton|model: not recorded", re.IGNORECASE)


def _common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", REPO_ROOT / "benchmarks" / "_common.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_results_table_names_its_cpu_model(path):
    assert NAMES_ITS_CPU.search(path.read_text()), f"{path.name} names no CPU model (benchmarks/_common.header does)"


def test_the_machine_line_names_the_cpu_model_not_the_architecture():
    common = _common()
    model = common.cpu_model()
    assert model and model != platform.machine()
    assert model in common.machine_line()
