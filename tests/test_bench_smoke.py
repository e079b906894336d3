"""Every benchmarked implementation, run once at a tiny shape, matches the reference.

This iterates the benchmark registry (``bench/implementations.py``), so an
implementation cannot be timed by ``make bench`` without being checked here.
A peer that is not installed, or an entry whose numba_lstm API does not exist
yet, is skipped with the reason the benchmark table prints.
"""

import datetime
import os
import pathlib
import re
import sys
import types

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
        "BLAS of the GEMM ceiling",
    ):
        assert title in tables
    # One repeat has no spread: n/a, not 0%, and a ratio without its range.
    assert all(r["iqr_percent"] is None for r in rows if r["workload"] != "gemm")
    cells = [
        line.split(" | ")
        for line in tables.splitlines()
        if line.startswith("| 2×5×4×4 | float32 | numba_lstm |")
    ]
    assert cells and all(c[4] == "n/a" and "[" not in c[7] for c in cells)


def _raw(times_by_implementation, workload="inference", baseline=None, gemm_within=None):
    """pytest-benchmark's JSON as ``bench/run.py`` reads it: one record per timed round."""
    return {
        "benchmarks": [
            {
                "stats": {"median": t},
                "extra_info": {
                    "group": f"{workload} B=2 T=5 I=4 H=4 float32",
                    "workload": workload,
                    "shape": [2, 5, 4, 4],
                    "dtype": "float32",
                    "implementation": name,
                    "position": position,
                    "baseline": name == baseline,
                    "repeat": repeat,
                    "flops": 1e9,
                    "sequence_steps": 10,
                    "iterations": 1,
                },
            }  # fmt: skip
            for position, (name, times) in enumerate(times_by_implementation.items())
            for repeat, t in enumerate(times)
        ]
        + [
            {
                "stats": {"median": t},
                "extra_info": {
                    "group": "gemm float32",
                    "workload": "gemm",
                    "shape": [10, 10, 10],
                    "dtype": "float32",
                    "implementation": "BLAS GEMM (ceiling)",
                    "position": 9,
                    "baseline": False,
                    "repeat": repeat,
                    "flops": 1e9,
                    "sequence_steps": 0,
                    "iterations": 1,
                    "within": f"{workload} B=2 T=5 I=4 H=4 float32",
                },
            }  # fmt: skip
            for repeat, t in enumerate(gemm_within or [])
        ]
    }


def test_summary_spread_is_the_interquartile_range_within_the_repeats():
    from bench import run

    (row,) = run.summarise(_raw({"numba_lstm": [5.0, 1.0, 4.0, 2.0, 3.0]}))[0]
    # Quartiles 2 and 4 of 1..5, median 3: (4 - 2) / 3.  The default of
    # statistics.quantiles extrapolates past the data: (4.5 - 1.5) / 3.
    assert row["median_s"] == 3.0
    assert row["iqr_percent"] == pytest.approx(100 * 2 / 3)
    (row,) = run.summarise(_raw({"numba_lstm": [1.0, 2.0]}))[0]
    assert row["iqr_percent"] == pytest.approx(100 * 0.5 / 1.5)  # half the range, not 1.5x it


def test_vs_pytorch_pairs_the_rounds_of_each_repeat():
    """The ratio is the median of each repeat's PyTorch / ours, with the
    quartiles of those ratios: rounds of one repeat run side by side.  The
    ratio of the medians (here 4 / 3) hid which repeats drifted together."""
    from bench import run

    raw = _raw({"numba_lstm": [1.0, 4.0, 3.0], "torch.nn.LSTM": [2.0, 4.0, 9.0]}, baseline="torch.nn.LSTM")
    ours, torch_row = run.summarise(raw)[0]
    assert ours["vs_pytorch"] == 2.0 and ours["vs_pytorch_iqr"] == [1.5, 2.5]
    assert torch_row["vs_pytorch"] == 1.0 and torch_row["vs_pytorch_iqr"] == [1.0, 1.0]
    assert run._ratio(ours) == "2.00x [1.50-2.50]"


def test_percent_of_gemm_is_against_the_gemm_rounds_of_the_same_shape():
    from bench import run

    # GEMM rounds of 1e9 flops: 2, 2, 4 and 4 s among this group's rounds
    # (the median time 3 s: 1/3 GFLOP/s), 1 s among another group's; the
    # header's ceiling pools all five (median 2 s: 0.5 GFLOP/s).
    raw = _raw({"numba_lstm": [10.0]}, gemm_within=[2.0, 2.0, 4.0, 4.0])
    other = dict(raw["benchmarks"][-1], stats={"median": 1.0})
    other["extra_info"] = dict(other["extra_info"], within="training B=2 T=5 I=4 H=4 float32", repeat=4)
    raw["benchmarks"].append(other)
    rows, gemm = run.summarise(raw)
    ours = next(r for r in rows if r["implementation"] == "numba_lstm")
    assert ours["gemm_gflops"] == pytest.approx(1 / 3)
    assert ours["gemm_percent"] == pytest.approx(100 * 0.1 * 3)
    assert gemm["float32"] == pytest.approx(0.5)


def test_each_repeat_orders_a_group_so_that_no_predecessor_repeats_often():
    """OpenBLAS's threads spin for about 0.1 s after a call: numba_lstm
    always ran right after the GEMM, and torch after the NumPy reference.
    In the rows of a Williams square, over the benchmark's 5 repeats no
    entry follows the same one more than once in a group of an even count,
    twice in an odd one; a rotation of one order kept all but one
    predecessor in every repeat."""
    import importlib.util
    from collections import Counter

    path = pathlib.Path(__file__).parent.parent / "bench" / "conftest.py"
    spec = importlib.util.spec_from_file_location("bench_conftest", path)  # tests/conftest.py has the name
    bench_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_conftest)
    for workload in registry.WORKLOADS:
        items = [impl.name for impl in [*registry.implementations(workload), bench_conftest.GEMM]]
        rows = [bench_conftest._order(items, repeat) for repeat in range(5)]
        assert all(sorted(row) == sorted(items) for row in rows), workload
        pairs = Counter(pair for row in rows for pair in zip(row, row[1:], strict=False))
        assert max(pairs.values()) <= (1 if len(items) % 2 == 0 else 2), (workload, pairs.most_common(2))
    # The run order of cases(): a group's repeat r in _order's row r.
    options = {"--bench-shapes": "2x5x4x4", "--bench-shapes64": "none", "--bench-stream-steps": 3,
               "--bench-stream-hidden": "none", "--bench-lengths": "none", "--bench-repeats": 3}  # fmt: skip
    cases = bench_conftest.cases(types.SimpleNamespace(getoption=options.__getitem__))
    items = [*registry.implementations("inference"), bench_conftest.GEMM]
    group = [c for c in cases if c.group == cases[0].group]
    for repeat in range(3):
        assert [c.impl for c in group if c.repeat == repeat] == bench_conftest._order(items, repeat)


def test_tables_without_a_baseline_or_gemm_row():
    """No PyTorch (so no 'vs PyTorch') and no GEMM row: the cells read n/a, and a
    skipped entry keeps its registry place among the others."""
    from bench import run

    rows, gemm = run.summarise(_raw({"numba_lstm": [1.0], "numpy reference": [2.0]}))
    skipped = [{"workload": "inference", "shape": [2, 5, 4, 4], "dtype": "float32",
                "implementation": "torch.nn.LSTM", "position": 1, "reason": "torch is not installed"}]  # fmt: skip
    rows[1]["position"] = 2  # the reference after torch's place in the registry
    machine = {"numba_lstm_bench": {"cpu_model": "cpu", "logical_cpus": 2, "threads_per_implementation": 2,
                                    "numba_threading_layer": "tbb", "threadpools": []}}  # fmt: skip
    tables = run.render_tables(rows, skipped, gemm, machine, {"warm_s": 0.5, "cold_s": 20.0})
    lines = [line for line in tables.splitlines() if line.startswith("| 2×5×4×4")]
    assert [line.split(" | ")[2] for line in lines] == ["numba_lstm", "torch.nn.LSTM", "numpy reference"]
    assert lines[0].endswith("| n/a | n/a |") and lines[2].endswith("| n/a | n/a |")
    assert "n/ax" not in tables and "n/a%" not in tables


def test_a_run_with_failed_benchmarks_still_writes_the_others(tmp_path, monkeypatch):
    """A benchmark that fails (a shape that does not fit in memory, say) used
    to end the run with nothing but pytest's log: the others' timings, in
    pytest-benchmark's file, were lost after a 15-minute run.  Now they are
    rendered, the failures listed, the log kept, and the exit is an error."""
    import json

    from bench import run

    machine = {"numba_lstm_bench": {"cpu_model": "cpu", "logical_cpus": 2, "threads_per_implementation": 2,
                                    "numba_threading_layer": "tbb", "threadpools": []}}  # fmt: skip
    failed = "FAILED bench/test_bench_lstm.py::test_lstm[inference-B=2-T=5-I=4-H=4-float32-r0-torch.nn.LSTM]"

    def run_pytest(args, raw_json, log_path):
        raw = _raw({"numba_lstm": [1.0]}) | {"datetime": "now", "machine_info": machine, "commit_info": {}}
        raw_json.write_text(json.dumps(raw))
        log_path.write_text(f"..F\n{failed} - MemoryError\n1 failed, 2 passed\n")
        return 1

    monkeypatch.setattr(run, "run_pytest", run_pytest)
    monkeypatch.setattr(run, "measure_startup", lambda: {"warm_s": 0.5, "cold_s": 20.0})
    with pytest.raises(SystemExit, match="pytest failed \\(exit 1\\): 1 benchmarks missing"):
        run.main(["--out", str(tmp_path)])
    (json_path,) = tmp_path.glob("*.json")
    assert json.loads(json_path.read_text())["failed"] == [f"{failed} - MemoryError"]
    tables = json_path.with_suffix(".md").read_text()
    assert "**Incomplete run**: pytest exited with 1" in tables and failed in tables
    assert "| 2×5×4×4 | float32 | numba_lstm |" in tables
    assert json_path.with_suffix(".log").exists() and not list(tmp_path.glob("*.raw.json"))


def test_startup_processes_write_python_bytecode(monkeypatch):
    """The warm start-up read numba_lstm's modules from source in every
    process on a host with PYTHONDONTWRITEBYTECODE set (an editable install
    has no bytecode from pip): 0.05-0.08 s of its 0.8 on the Zen 3.  Its
    processes now write bytecode as Python does by default, and share one
    new compile cache, removed after."""
    from bench import run

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    envs = []

    class StartupProcess:
        returncode = 0

        def __init__(self, command, env, **kwargs):
            assert os.path.isdir(env["NUMBA_CACHE_DIR"])
            envs.append(env)

        def communicate(self):
            return "0.5\n", ""

    monkeypatch.setattr(run.subprocess, "Popen", StartupProcess)
    assert run.measure_startup(repeats=3) == {"cold_s": 0.5, "warm_s": 0.5}
    assert len(envs) == 4
    assert all("PYTHONDONTWRITEBYTECODE" not in env for env in envs)
    (cache,) = {env["NUMBA_CACHE_DIR"] for env in envs}
    assert not os.path.exists(cache)


@pytest.mark.parametrize("child", ["pytest", "start-up"])
def test_a_stop_while_a_child_process_starts_still_ends_it(child, tmp_path, monkeypatch):
    """A stop that came inside subprocess.Popen, after the fork and before
    it returned, left no process to end: run_pytest's pytest ran on after
    run.py exited, and measure_startup's process (up to half a minute,
    cold).  The stop signals are held while Popen runs."""
    import json
    import signal

    from bench import run

    class StoppedWhileStarting:
        def __init__(self, *args, **kwargs):
            signal.raise_signal(signal.SIGTERM)

    def run_pytest(args, raw_json, log_path):
        raw_json.write_text(json.dumps({"datetime": "now"}))
        log_path.write_text("1 passed\n")
        return 0

    if child == "start-up":
        monkeypatch.setattr(run, "run_pytest", run_pytest)
    ended, handler = [], signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(run.subprocess, "Popen", StoppedWhileStarting)
    monkeypatch.setattr(run, "_end", ended.append)
    with pytest.raises(SystemExit) as stop:
        run.main(["--shapes", "2x5x4x4", "--out", str(tmp_path)])
    assert stop.value.code == 128 + signal.SIGTERM
    assert [type(process) for process in ended] == [StoppedWhileStarting]
    assert not list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGTERM) == handler  # main put pytest's back


def test_a_startup_process_that_fails_shows_its_error(monkeypatch):
    from bench import run

    class FailedStartup:
        returncode = 1

        def __init__(self, command, **kwargs):
            pass

        def communicate(self):
            return "", "ImportError: no numba_lstm"

    monkeypatch.setattr(run.subprocess, "Popen", FailedStartup)
    with pytest.raises(
        RuntimeError, match=r"the start-up process failed \(exit 1\):\nImportError: no numba_lstm$"
    ):
        run.measure_startup()


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="no SIGHUP (Windows)")
def test_a_run_under_nohup_goes_on_after_a_hangup(tmp_path, monkeypatch):
    """main's handler of SIGHUP replaced nohup's SIG_IGN: `nohup make bench`
    stopped when its terminal closed.  An ignored signal stays ignored."""
    import json
    import signal

    from bench import run

    machine = {"numba_lstm_bench": {"cpu_model": "cpu", "logical_cpus": 2, "threads_per_implementation": 2,
                                    "numba_threading_layer": "tbb", "threadpools": []}}  # fmt: skip

    def run_pytest(args, raw_json, log_path):
        signal.raise_signal(signal.SIGHUP)  # the terminal closes
        raw = _raw({"numba_lstm": [1.0]}) | {"datetime": "now", "machine_info": machine, "commit_info": {}}
        raw_json.write_text(json.dumps(raw))
        log_path.write_text("1 passed\n")
        return 0

    monkeypatch.setattr(run, "run_pytest", run_pytest)
    monkeypatch.setattr(run, "measure_startup", lambda: {"warm_s": 0.5, "cold_s": 20.0})
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        run.main(["--shapes", "2x5x4x4", "--out", str(tmp_path)])
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert len(list(tmp_path.glob("*.json"))) == 1 and not list(tmp_path.glob("*.raw.json"))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--shapes", "2x3x4"], r"--shapes: expected 'none' or comma-separated BxTxIxH shapes, positive integers, got '2x3x4'"),
        (["--shapes", "ax3x4x5"], r"--shapes: expected .* got 'ax3x4x5'"),
        (["--shapes64", "0x3x4x5"], r"--shapes64: expected .* got '0x3x4x5'"),
        (["--lengths", "4x10x3"], r"--lengths: expected .* got '4x10x3'"),
        (["--stream-hidden", "abc"], r"--stream-hidden: expected 'none' or comma-separated hidden sizes H"),
        (["--repeats", "0"], r"--repeats: expected a number >= 1, got '0'"),
        (["--threads", "-1"], r"--threads: expected a number >= 0, got '-1'"),
        (["--gemm-size", "0"], r"--gemm-size: expected a number >= 1"),
        (["--stream-steps", "0"], r"--stream-steps: expected a number >= 1"),
        (["--pause", "nan"], r"--pause: expected a number >= 0.0, got 'nan'"),
        (["--shapes", "none", "--shapes64", "none", "--stream-hidden", "none", "--lengths", "none"], "nothing to run"),
    ],
)  # fmt: skip
def test_bench_arguments_are_checked_before_any_work(arguments, message, capsys):
    """Bad values went to the benchmarks' pytest process and ended about 20
    s later in a JSONDecodeError of an empty file (or in the chart, or an
    abort of onnxruntime at B = 0), naming no argument."""
    from bench import run

    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(arguments)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_run_whose_pytest_wrote_nothing_stops_at_once(tmp_path, monkeypatch):
    """claim_stamp creates the run's .raw.json empty, so the check for a
    missing file never stopped a failed run: it went on to the start-up
    measurement and failed reading the empty file, which it left behind."""
    import io

    from bench import run

    class PytestThatFails:
        def __init__(self, *args, **kwargs):
            self.stdout = io.BytesIO(b"INTERNALERROR> the benchmarks could not start\n")

        def wait(self):
            return 3

    monkeypatch.setattr(run.subprocess, "Popen", PytestThatFails)
    monkeypatch.setattr(run, "measure_startup", lambda: pytest.fail("the run went on"))
    with pytest.raises(SystemExit, match=r"(?s)pytest failed \(exit 3\).*could not start"):
        run.main(["--shapes", "2x5x4x4", "--out", str(tmp_path)])
    assert not list(tmp_path.glob("*.raw.json")) and len(list(tmp_path.glob("*.log"))) == 1


def test_runs_of_the_same_second_keep_their_own_files(tmp_path, monkeypatch):
    """Two runs whose stamps fall in the same second wrote the same file
    names, and the second run's results replaced the first's."""
    import json

    from bench import run

    machine = {"numba_lstm_bench": {"cpu_model": "cpu", "logical_cpus": 2, "threads_per_implementation": 2,
                                    "numba_threading_layer": "tbb", "threadpools": []}}  # fmt: skip

    def run_pytest(args, raw_json, log_path):
        assert raw_json.exists(), "the run's raw JSON claims its name before pytest runs"
        raw = _raw({"numba_lstm": [args.repeats * 1.0]}) | {"datetime": "now", "machine_info": machine}
        raw_json.write_text(json.dumps(raw | {"commit_info": {}}))
        log_path.write_text("1 passed\n")
        return 0

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 7, 3, 4, 5)

    monkeypatch.setattr(run, "run_pytest", run_pytest)
    monkeypatch.setattr(run, "measure_startup", lambda: {"warm_s": 0.5, "cold_s": 20.0})
    monkeypatch.setattr(run, "datetime", types.SimpleNamespace(datetime=Frozen))
    monkeypatch.setattr(run.platform, "node", lambda: "host.example")
    for repeats in (3, 4, 5):
        run.main(["--out", str(tmp_path), "--repeats", str(repeats)])
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == [
        "20261207-030405-host-2.json",
        "20261207-030405-host-3.json",
        "20261207-030405-host.json",
    ]
    repeats = [json.loads((tmp_path / name).read_text())["arguments"]["repeats"] for name in names]
    assert repeats == [4, 5, 3]
    assert len(list(tmp_path.glob("*.md"))) == 3 and not list(tmp_path.glob("*.raw.json"))
    # A name held by a run that is still going (its raw JSON) is not taken either.
    (tmp_path / "x.raw.json").touch()
    assert run.claim_stamp(tmp_path, "x") == "x-2"


def test_bench_threads_are_capped_by_numba_num_threads():
    """Numba's pool cannot grow past NUMBA_NUM_THREADS: the others get no more than it."""
    import subprocess

    root = pathlib.Path(__file__).resolve().parent.parent
    script = (
        "import sys, torch, numba; sys.path.insert(0, '.'); from bench import implementations as r\n"
        "n = r.configure_threads(2)\n"
        "from threadpoolctl import threadpool_info\n"
        "blas = {p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}\n"
        "print(n, numba.get_num_threads(), torch.get_num_threads(), r._threads(), sorted(blas))\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1", "1", "1", "1", "[1]"]


def _children(pid):
    """The process ids of pid's children (Linux's /proc)."""
    path = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _gone(pid):
    """Whether process pid has ended and been reaped (or is a zombie of a parent that ended)."""
    status = pathlib.Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.skipif(
    not pathlib.Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
    reason="reads children from Linux's /proc (CONFIG_PROC_CHILDREN)",
)
@pytest.mark.parametrize("signum", [1, 2, 15], ids=["SIGHUP", "SIGINT", "SIGTERM"])
def test_a_stopped_run_ends_its_pytest_and_leaves_no_files(tmp_path, signum):
    """`kill` of bench/run.py ended it alone: its pytest went on running
    benchmarks (an orphan), and the claimed .raw.json and the log stayed in
    the results folder, as they did after Ctrl-C."""
    import signal
    import subprocess
    import time

    root = pathlib.Path(__file__).resolve().parent.parent
    command = [
        sys.executable, str(root / "bench" / "run.py"), "--shapes", "2x5x4x4", "--shapes64", "none",
        "--stream-hidden", "none", "--lengths", "none", "--repeats", "1000", "--pause", "0",
        "--out", str(tmp_path),
    ]  # fmt: skip

    # Under nohup SIGHUP is ignored, and in a background job SIGINT (`make
    # test &`): run.py leaves an ignored signal ignored, and the case waited
    # 60 s and failed.  The runner gets the default dispositions, as from a
    # terminal.
    def default_stop_signals():
        for stop_signal in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, signal.SIG_DFL)

    runner = subprocess.Popen(
        command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_stop_signals,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (children := _children(runner.pid)) or not list(tmp_path.glob("*.log")):
            assert runner.poll() is None, runner.stderr.read()
            assert time.monotonic() < deadline, "pytest did not start"
            time.sleep(0.05)
        runner.send_signal(signum)
        _, err = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 128 + signum, err
    assert f"stopped ({signal.Signals(signum).name}): no results written" in err
    assert all(_gone(pid) for pid in children), "pytest outlived bench/run.py"
    assert not list(tmp_path.iterdir())
