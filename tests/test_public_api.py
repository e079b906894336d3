"""Each public module says what is public: ``__all__`` names the functions and
classes it defines without an underscore, every one documented, and nothing it
only imports or keeps as a constant."""

import importlib
import inspect

import pytest

MODULES = ["convert", "dense", "functional", "gates", "io", "jit", "layer", "losses", "optim", "reference"]
# Defined in these modules without an underscore, yet internal: the packing of
# variable lengths (functional) and the optimizers' base class (optim).
INTERNAL = {"functional": {"Packing"}, "optim": {"Optimizer"}}


@pytest.mark.parametrize("name", MODULES)
def test_all_names_the_documented_functions_and_classes_the_module_defines(name):
    module = importlib.import_module(f"numba_lstm.{name}")
    defined = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value) or hasattr(value, "py_func"))
        and getattr(value, "__module__", None) == module.__name__
    }
    assert sorted(module.__all__) == sorted(defined - INTERNAL.get(name, set()))
    for key in module.__all__:
        assert inspect.getdoc(getattr(module, key)), f"numba_lstm.{name}.{key} has no docstring"


def test_version_is_the_packages():
    """``__version__`` and pyproject.toml's version (the installed metadata) are written twice: one value."""
    import importlib.metadata

    import numba_lstm

    assert numba_lstm.__version__ == importlib.metadata.version("numba_lstm")
