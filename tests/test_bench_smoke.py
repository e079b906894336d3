"""Every benchmarked implementation, run once at a tiny shape, matches the reference.

This iterates the benchmark registry (``bench/implementations.py``), so an
implementation cannot be timed by ``make bench`` without being checked here.
A peer that is not installed, or an entry whose numba_lstm API does not exist
yet, is skipped with the reason the benchmark table prints.
"""

import pathlib
import sys

import numpy as np
import pytest
from conftest import assert_close

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # the repository root, for bench/
from bench import implementations as registry  # noqa: E402

#: (T, B, I, H) per workload: small, but with B > 1 (B = 1 for streaming) and
#: T long enough that errors would compound.
TINY = {
    "inference": (7, 3, 5, 4),
    "training": (7, 3, 5, 4),
    "streaming": (7, 1, 6, 6),
    "lengths": (9, 5, 4, 3),
}

CASES = [
    pytest.param(impl, dtype, id=f"{impl.workload}-{impl.name}-{np.dtype(dtype).name}")
    for impl in registry.REGISTRY
    for dtype in (np.float32, np.float64)
]


@pytest.mark.parametrize(("impl", "dtype"), CASES)
def test_implementation_matches_reference(impl, dtype):
    reason = impl.skip_reason(dtype)
    if reason is not None:
        pytest.skip(reason)
    problem = registry.make_problem(impl.workload, *TINY[impl.workload], dtype, seed=1)
    run, collect = impl.prepare(problem)
    run()
    got = collect()
    names = impl.outputs or registry.OUTPUTS[impl.workload]
    assert set(got) == set(names)
    ref = registry.expected(impl.workload, problem)
    for name in names:
        assert np.asarray(got[name]).dtype == dtype, f"{name} has dtype {np.asarray(got[name]).dtype}"
        assert_close(got[name], ref[name], dtype, f"{impl.name} {name}")


def test_every_workload_has_a_numba_lstm_entry_and_one_baseline():
    for workload in registry.WORKLOADS:
        entries = registry.implementations(workload)
        assert any(impl.name.startswith("numba_lstm") for impl in entries), workload
        assert sum(impl.baseline for impl in entries) == 1, workload


def test_lengths_problem_covers_the_full_length():
    lengths = registry.make_problem("lengths", 100, 64, 2, 2, np.float32)["lengths"]
    assert lengths.max() == 100 and lengths.min() >= 10


def test_flops_follow_the_protocol():
    assert registry.flops("inference", 100, 64, 256, 256) == 2 * 100 * 64 * 512 * 1024
    assert registry.flops("training", 100, 64, 256, 256) == 3 * registry.flops("inference", 100, 64, 256, 256)


def test_make_bench_pipeline_end_to_end(tmp_path):
    """bench/run.py at tiny sizes: pytest-benchmark, the summary, the tables and the chart.

    The entries themselves are checked above; this runs the machinery that
    ``make bench`` runs (one timed round each), so a broken runner fails
    ``make test`` rather than a user's ``make bench``.
    """
    import json
    import subprocess

    root = pathlib.Path(__file__).resolve().parent.parent
    command = [
        sys.executable, str(root / "bench" / "run.py"), "--shapes", "2x5x4x4", "--shapes64", "2x5x4x4",
        "--stream-hidden", "4", "--stream-steps", "3", "--lengths", "4x10x3x3", "--repeats", "1",
        "--gemm-size", "64", "--pause", "0", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (json_path,) = tmp_path.glob("*.json")
    assert json_path.with_suffix(".png").stat().st_size > 0
    results = json.loads(json_path.read_text())
    rows = results["rows"]
    assert {r["workload"] for r in rows} == {"gemm", "inference", "training", "streaming", "lengths"}
    assert all(r["median_s"] > 0 for r in rows)
    # One timed round each (--repeats 1); the GEMM ceiling is timed in every group.
    assert all(len(r["times"]) == 1 for r in rows if r["workload"] != "gemm")
    numba_rows = [r for r in rows if r["implementation"] == "numba_lstm" and r["workload"] == "inference"]
    assert {r["dtype"] for r in numba_rows} == {"float32", "float64"}
    assert all(r["vs_pytorch"] is not None for r in numba_rows if registry._import("torch") is not None)
    tables = json_path.with_suffix(".md").read_text()
    for title in (
        "### Inference",
        "### Training",
        "### Streaming",
        "### Variable lengths",
        "BLAS under numba_lstm",
    ):
        assert title in tables
