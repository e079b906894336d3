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


def test_the_sdist_holds_the_package_and_not_half_of_the_tests(tmp_path):
    """setuptools adds tests/test*.py to an sdist by default, without
    conftest.py or the files the tests read; MANIFEST.in prunes them."""
    import shutil
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "numba_lstm", src / "numba_lstm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "tests", src / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    build = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path / 'dist')!r}))"
    run = subprocess.run([sys.executable, "-c", build], cwd=src, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    with tarfile.open(tmp_path / "dist" / run.stdout.strip().splitlines()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert "numba_lstm/__init__.py" in names and "numba_lstm/_kernels.py" in names and "LICENSE" in names
    assert not any(name.startswith("tests/") for name in names), sorted(names)
