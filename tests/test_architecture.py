"""The house rules a test can check: one exception root, no import cycles (ARCHITECTURE.md)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pandas as pd
import pytest

import histo_utils
from histo_utils import io, splits
from histo_utils.errors import HistoUtilsError

#: The one exception class allowed outside the root: a signal (SIGTERM/SIGINT), not a refusal.
SIGNALS = {"histo_utils.run.RunInterrupted"}


def _modules():
    for info in pkgutil.walk_packages(histo_utils.__path__, "histo_utils."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def test_every_exception_of_the_package_sits_under_one_root():
    found, stray = set(), []
    for mod in _modules():
        for name, obj in vars(mod).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__.startswith("histo_utils")):
                qual = f"{obj.__module__}.{obj.__qualname__}"
                found.add(qual)
                if qual not in SIGNALS and not issubclass(obj, HistoUtilsError):
                    stray.append(qual)
    assert not stray, f"exception classes outside HistoUtilsError: {stray}"
    assert "histo_utils.data.EmptyGridError" in found and "histo_utils.io.GCTError" in found


@pytest.mark.parametrize("call, builtin", [
    (lambda: io.read_gct("/nonexistent/x.gct.gz"), FileNotFoundError),
    (lambda: splits.split_subjects(pd.DataFrame({"subject_id": ["a"], "SMTS": ["x"]}), fractions=(2, 0, 0)),
     ValueError),
])
def test_a_refusal_is_both_the_root_and_the_builtin_callers_already_catch(call, builtin):
    with pytest.raises(HistoUtilsError) as err:
        call()
    assert isinstance(err.value, builtin)
