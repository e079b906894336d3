"""Run the benchmarks and render their tables, results JSON and chart.

    python bench/run.py --shapes 64x100x256x256 --shapes64 64x100x256x256

runs ``pytest bench/test_bench_lstm.py`` with pytest-benchmark in one process
(every implementation with the same thread count, interleaved, warmed up),
then writes under ``bench/results/``:

* ``<stamp>.json``: every timed call, the summary rows, skipped entries and
  the machine (CPU, cores, threads, library versions, Numba threading layer);
* ``<stamp>.md``: the tables printed here;
* ``<stamp>.png``: a chart of the implementations per shape.

``<stamp>`` is ``<date>-<time>-<host>``, with ``-2``, ``-3``, ... for the
runs of the same second on the same host (``claim_stamp``).

Shapes are ``BxTxIxH`` (batch, steps, inputs, hidden units).
"""

import argparse
import codecs
import contextlib
import datetime
import json
import os
import pathlib
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository root, for bench/
from bench import sizes  # noqa: E402

TITLES = {
    "inference": "Inference: forward over the whole sequence",
    "training": "Training: forward + backward (FLOPs counted 3x the forward)",
    "streaming": "Streaming: one step per call, B = 1, I = H (time per step)",
    "lengths": "Variable lengths: sequence lengths uniform in T/10..T (only valid steps count)",
}


def _list_of(parts, what):
    """An argparse type: 'none', or comma-separated values of ``parts``
    positive integers joined by "x" (``what`` names them in the message)."""

    def check(text):
        if text.strip().lower() == "none":
            return "none"
        try:
            if not sizes.parse(text, parts):
                raise ValueError(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected 'none' or comma-separated {what}, positive integers, got {text!r}"
            ) from None
        return text

    return check


def _at_least(minimum, kind=int):
    """An argparse type: a finite number of ``kind`` at least ``minimum``."""

    def check(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {text!r}")
        return value

    return check


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as it is, and each option's default."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    shapes, hidden = _list_of(4, "BxTxIxH shapes"), _list_of(1, "hidden sizes H")
    parser.add_argument(
        "--shapes",
        type=shapes,
        default="16x100x128x256",
        help="float32 shapes, comma-separated BxTxIxH ('none' for none)",
    )
    parser.add_argument(
        "--shapes64", type=shapes, default="16x100x128x256", help="float64 shapes ('none' for none)"
    )
    parser.add_argument(
        "--stream-hidden",
        type=hidden,
        default="32,128,512",
        help="streaming hidden sizes H ('none' for none)",
    )
    parser.add_argument("--stream-steps", type=_at_least(1), default=100, help="steps per streaming call")
    parser.add_argument(
        "--lengths", type=shapes, default="64x100x256x256", help="variable-lengths shapes ('none' for none)"
    )
    parser.add_argument(
        "--repeats",
        type=_at_least(1),
        default=5,
        help="timed rounds per implementation and shape (median of them; a round repeats a short call "
        "for about 20 ms, up to 1000 calls)",
    )
    parser.add_argument(
        "--threads",
        type=_at_least(0),
        default=0,
        help="threads for every implementation (0: torch's default)",
    )
    parser.add_argument(
        "--gemm-size", type=_at_least(1), default=2048, help="n of the n^3 GEMM that measures the ceiling"
    )
    parser.add_argument(
        "--pause",
        type=_at_least(0.0, float),
        default=None,
        help="idle seconds before each timed round (None: PAUSE_S of bench/conftest.py, longer than "
        "OpenBLAS's threads spin after a call)",
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON, Markdown and PNG")
    args = parser.parse_args(argv)
    if all(value == "none" for value in (args.shapes, args.shapes64, args.stream_hidden, args.lengths)):
        parser.error("nothing to run: --shapes, --shapes64, --stream-hidden and --lengths are all 'none'")
    return args


def run_pytest(args, raw_json, log_path):
    """Run the benchmarks in one pytest process; its output goes to ``log_path``.

    Returns pytest's exit status.  A run in which some benchmarks failed (a
    shape that does not fit in memory, a peer's error) still wrote the
    others to ``raw_json``, which ``main`` renders; with nothing written, it
    stops here."""
    command = [
        sys.executable, "-m", "pytest", str(HERE / "test_bench_lstm.py"), "-q", "-p", "no:cacheprovider",
        "--benchmark-enable", "--benchmark-quiet", f"--benchmark-json={raw_json}",
        f"--bench-shapes={args.shapes}", f"--bench-shapes64={args.shapes64}",
        f"--bench-stream-hidden={args.stream_hidden}", f"--bench-stream-steps={args.stream_steps}",
        f"--bench-lengths={args.lengths}", f"--bench-repeats={args.repeats}",
        f"--bench-threads={args.threads}", f"--bench-gemm-size={args.gemm_size}",
        *([f"--bench-pause={args.pause}"] if args.pause is not None else []),
    ]  # fmt: skip
    # Unbuffered, so that each benchmark's dot shows when it ends (through a
    # pipe the child's output came in blocks of minutes).
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    echo, line_start = True, True
    with open(log_path, "wb") as log:
        process = None
        try:
            with _signals_held():  # a stop that came inside Popen left its pytest running
                process = subprocess.Popen(
                    command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
                )
            for chunk in iter(lambda: process.stdout.read1(4096), b""):
                log.write(chunk)
                # pytest -q starts with its progress lines (one character a test,
                # then "[ NN%]"): echo them as they come, and nothing after.
                for char in decoder.decode(chunk) if echo else "":
                    if line_start and char not in ".sFExX":
                        echo = False
                        break
                    sys.stdout.write(char)
                    line_start = char == "\n"
                sys.stdout.flush()
            returncode = process.wait()
        except BaseException:  # Ctrl-C, or a signal that _Stopped stands for: pytest stops too
            if process is not None:
                _end(process)
            raise
    if returncode != 0 and not raw_json.stat().st_size:  # claim_stamp made it empty: nothing written
        raw_json.unlink()
        sys.exit(
            f"pytest failed (exit {returncode}); its output is in {log_path}:\n"
            + log_path.read_text()[-4000:]
        )
    return returncode


#: The signals that stop a run: Ctrl-C's, ``kill``'s and a closed terminal's.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)  # no SIGHUP on Windows

#: The stop signals that came while ``_signals_held``, which ``_stop`` notes
#: instead of raising; None when they are not held.
_held = None


def _stop(signum, frame):
    """``main``'s handler of the stop signals: raise ``_Stopped`` (Ctrl-C:
    ``KeyboardInterrupt``), or note the signal while they are held."""
    if _held is not None:
        _held.append(signum)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        raise _Stopped(signum)


@contextlib.contextmanager
def _signals_held():
    """Hold back the stop signals until the block ends, then raise the first.

    A stop raised inside ``subprocess.Popen``, after the fork and before it
    returned, left no process object to end: the pytest child went on
    running after run.py exited (3 of 36 stops in the test, the host loaded).
    Raised after the block, the stop finds the process assigned.  No handler
    is swapped here (a signal between two swaps left one in place): the
    handler that ``main`` installs reads ``_held``.
    """
    global _held
    _held = []
    try:
        yield
    finally:
        pending, _held = _held, None  # one that comes in between joins pending
        if pending:
            _stop(pending[0], None)


#: Seconds that a child (pytest, a start-up process) has to end after SIGTERM before it is killed.
END_GRACE_S = 10


def _end(process):
    """Stop a child process: SIGTERM, then SIGKILL after ``END_GRACE_S`` (or
    at once if another signal interrupts the wait)."""
    try:
        process.terminate()
        process.wait(timeout=END_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached run.py: it stops as on Ctrl-C (``main``)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def failures(log_path):
    """pytest's ``FAILED ...`` summary lines in the log (``-q`` prints one per failed test)."""
    return [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("FAILED ")]


#: What a new process times for the start-up row: ``import numba_lstm`` and a
#: first forward call (float32, the layer's default dtype).
STARTUP_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np
import numba_lstm
x = np.ones((10, 4, 8), np.float32)
W = np.full((8 + 16, 64), 0.1, np.float32)
numba_lstm.lstm_forward(x, W, np.zeros(64, np.float32))
print(time.perf_counter() - start)
"""


def measure_startup(repeats=3):
    """Seconds of ``import numba_lstm`` + a first forward in new processes: cold, then warm.

    Cold: a new, empty compile cache (``NUMBA_CACHE_DIR``), so every kernel
    the call needs is compiled.  Warm: later processes with that cache (the
    median of ``repeats``).  Python writes and reads its bytecode as it does
    by default: ``PYTHONDONTWRITEBYTECODE``, which some hosts set, is dropped
    for these processes.  With it, every warm process compiled numba_lstm's
    modules from source again (an editable install gets no bytecode from
    pip), 0.05-0.08 s of each warm start-up on the Zen 3.
    """
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def once():
            process = None
            try:
                with _signals_held():  # as in run_pytest
                    process = subprocess.Popen(
                        [sys.executable, "-c", STARTUP_SCRIPT],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                stdout, stderr = process.communicate()
            except BaseException:  # a stop: the child stops too
                if process is not None:
                    _end(process)
                raise
            if process.returncode:
                raise RuntimeError(
                    f"the start-up process failed (exit {process.returncode}):\n{stderr[-4000:]}"
                )
            return float(stdout.split()[-1])

        cold = once()
        warm = statistics.median(once() for _ in range(repeats))
    return {"cold_s": cold, "warm_s": warm}


def _quartiles(values):
    """``(q1, median, q3)`` of ``values``, the quartiles interpolated within the data.

    "inclusive": the default ("exclusive") extrapolates past the data with
    few repeats: with 5 it gave the min and max half weight, with 2 it gave
    1.5x the range.  One value is its own quartiles.
    """
    if len(values) == 1:
        return (values[0],) * 3
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def summarise(raw):
    """One row per (group, implementation): the median of its repeats and derived rates.

    Each row keeps its rounds' times in run order (``times``, ``repeats``).
    ``vs_pytorch`` is the median over the repeats of PyTorch's time divided
    by this implementation's in the same repeat, with the interquartile
    range of those ratios (``vs_pytorch_iqr``): the rounds of one repeat run
    side by side, so the ratio's spread is the comparison's own.
    ``gemm_percent`` is against the GEMM rounds run within the same group
    (``gemm_gflops`` of the row); the returned ``gemm`` is the rate of all
    of a dtype's GEMM rounds, for the header; each rate is the flops over
    the median time, as every row's.
    """
    calls, gemm_within = {}, {}
    for bench in raw["benchmarks"]:
        info = bench["extra_info"]
        key = (info["group"], info["implementation"])
        row = calls.setdefault(
            key, {k: info[k] for k in info if k not in ("repeat", "within")} | {"times": [], "repeats": []}
        )
        row["times"].append(bench["stats"]["median"])
        row["repeats"].append(info["repeat"])
        if "within" in info:  # a GEMM round, run among that group's rounds
            gemm_within.setdefault(info["within"], []).append((info["flops"], bench["stats"]["median"]))
    rows = list(calls.values())
    for row in rows:
        q1, row["median_s"], q3 = _quartiles(row["times"])
        row["iqr_percent"] = 100 * (q3 - q1) / row["median_s"] if len(row["times"]) > 1 else None
        row["gflops"] = row["flops"] / row["median_s"] / 1e9
        row["steps_per_s"] = row["sequence_steps"] / row["median_s"]
    rows.sort(key=lambda row: row["workload"] == "gemm")
    gemm = {row["dtype"]: row["gflops"] for row in rows if row["workload"] == "gemm"}
    baseline = {row["group"]: row for row in rows if row["baseline"]}
    for row in rows:
        group_gemm = gemm_within.get(row["group"])  # its rate as the header's: the flops over the median time
        row["gemm_gflops"] = (
            group_gemm[0][0] / statistics.median(t for _, t in group_gemm) / 1e9
            if group_gemm
            else gemm.get(row["dtype"])
        )
        row["gemm_percent"] = 100 * row["gflops"] / row["gemm_gflops"] if row["gemm_gflops"] else None
        row["vs_pytorch"] = row["vs_pytorch_iqr"] = None
        base = baseline.get(row["group"])
        if base is not None:
            base_times = dict(zip(base["repeats"], base["times"], strict=True))
            ratios = [
                base_times[r] / t
                for r, t in zip(row["repeats"], row["times"], strict=True)
                if r in base_times
            ]
            if ratios:
                q1, row["vs_pytorch"], q3 = _quartiles(ratios)
                row["vs_pytorch_iqr"] = [q1, q3] if len(ratios) > 1 else None
    return rows, gemm


def _fmt(value, spec, unit="", missing="n/a"):
    """``value`` formatted with its unit, or ``missing`` alone (no unit) where there is no value."""
    return missing if value is None else format(value, spec) + unit


def _blas_line(info):
    """Which BLAS kernels the GEMM ceiling ran on, and whether the environment chose them."""
    pools = [p for p in info.get("threadpools", []) if "scipy.libs" in (p.get("filepath") or "")]
    pools = pools or [p for p in info.get("threadpools", []) if p.get("user_api") == "blas"]
    kernels = ", ".join(
        f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')} kernels)" for p in pools
    )
    forced = info.get("OPENBLAS_CORETYPE")
    why = (
        f"forced by OPENBLAS_CORETYPE={forced} in the environment"
        if forced
        else "chosen by OpenBLAS for this CPU"
    )
    return (
        f"BLAS of the GEMM ceiling (Numba's `np.dot`, which numba_lstm's sequence kernels do not call): "
        f"{kernels or 'unknown'}, {why}."
    )


def _gemm_range(rows, dtype):
    """`` (within the shapes: LOW-HIGH)``: the range of the GEMM rates measured among each shape's rounds, or nothing."""
    rates = sorted({row["gemm_gflops"] for row in rows if row["workload"] != "gemm" and row["dtype"] == dtype
                    and row.get("gemm_gflops")})  # fmt: skip
    return f" (within the shapes: {rates[0]:.0f}-{rates[-1]:.0f})" if len(rates) > 1 else ""


def _ratio(row):
    """The 'vs PyTorch' cell: ``0.83x [0.80-0.86]``, or n/a."""
    if row["vs_pytorch"] is None:
        return "n/a"
    if row["vs_pytorch_iqr"] is None:  # one repeat
        return f"{row['vs_pytorch']:.2f}x"
    low, high = row["vs_pytorch_iqr"]
    return f"{row['vs_pytorch']:.2f}x [{low:.2f}-{high:.2f}]"


def render_tables(rows, skipped, gemm, machine, startup):
    """Markdown tables, one per workload, rows in registry order, skipped entries included."""
    info = machine["numba_lstm_bench"]
    lines = [
        f"Machine: {info['cpu_model']}, {info['logical_cpus']} logical CPUs; "
        f"{info['threads_per_implementation']} threads for every implementation; "
        f"Numba threading layer {info['numba_threading_layer']}.",
        "",
        _blas_line(info),
        "",
        "GEMM ceiling (n = {n}, `np.dot` inside `@njit`, median of every round): ".format(
            n=next((r["shape"][0] for r in rows if r["workload"] == "gemm"), "?")
        )
        + ", ".join(
            f"{dtype} {rate:.1f} GFLOP/s{_gemm_range(rows, dtype)}" for dtype, rate in sorted(gemm.items())
        ),
        "",
        "Times are medians of the repeats; ± is the interquartile range as % of the median; "
        "'vs PyTorch' is PyTorch's time divided by this time in the same repeat, the median over the "
        "repeats [and the interquartile range of those ratios] (above 1: faster than PyTorch); "
        "'% of GEMM' is against the GEMM rounds run among the same shape's.",
        "",
        f"Start-up, new process, `import numba_lstm` + first float32 forward: "
        f"{startup['warm_s']:.2f} s with the compile cache warm, {startup['cold_s']:.1f} s cold (empty cache).",
    ]
    order = {}
    for row in rows:
        order.setdefault(row["group"], []).append(row)
    for entry in skipped:
        group = next((g for g, rs in order.items() if rs[0]["workload"] == entry["workload"]
                      and rs[0]["shape"] == entry["shape"] and rs[0]["dtype"] == entry["dtype"]), None)  # fmt: skip
        if group is not None:
            order[group].append(entry | {"skipped": True})
    for group_rows in order.values():  # skipped entries among the others, by registry position
        group_rows.sort(key=lambda row: row.get("position", 0))
    for workload, title in TITLES.items():
        groups = [g for g, rs in order.items() if rs[0]["workload"] == workload]
        if not groups:
            continue
        streaming = workload == "streaming"
        time_header = "µs / step" if streaming else "ms / call"
        lines += ["", f"### {title}", ""]
        lines.append(f"| B×T×I×H | dtype | implementation | {time_header} | ± | "
                     "seq-steps/s | GFLOP/s | vs PyTorch | % of GEMM |")  # fmt: skip
        lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|")
        for group in groups:
            for row in order[group]:
                shape = "×".join(str(n) for n in row["shape"])
                if row.get("skipped"):
                    lines.append(f"| {shape} | {row['dtype']} | {row['implementation']} | "
                                 f"skipped: {row['reason']} | | | | | |")  # fmt: skip
                    continue
                t = row["median_s"] * (1e6 / row["sequence_steps"] if streaming else 1e3)
                lines.append(
                    f"| {shape} | {row['dtype']} | {row['implementation']} | {t:.3g} | "
                    f"{_fmt(row['iqr_percent'], '.0f', '%')} | {row['steps_per_s']:.3g} | {row['gflops']:.3g} | "
                    f"{_ratio(row)} | {_fmt(row['gemm_percent'], '.0f', '%')} |"
                )
    return "\n".join(lines) + "\n"


def _shape_label(group):
    """'inference B=1 T=1000 I=128 H=128 float32' -> three short lines for an axis tick."""
    b, t, i, h, dtype = group.split()[1:]
    return f"{b} {t}\n{i} {h}\n{dtype}"


def render_chart(rows, path):
    """One panel per workload: GFLOP/s (streaming: µs per step) per implementation and shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w for w in TITLES if any(r["workload"] == w for r in rows)]
    everyone = list(dict.fromkeys(r["implementation"] for r in rows))
    colours = {name: plt.get_cmap("tab20")(k % 20) for k, name in enumerate(everyone)}  # same in every panel
    fig, axes = plt.subplots(len(workloads), 1, figsize=(14, 3.6 * len(workloads)), squeeze=False)
    for ax, workload in zip(axes[:, 0], workloads, strict=True):
        mine = [r for r in rows if r["workload"] == workload]
        groups = list(dict.fromkeys(r["group"] for r in mine))
        names = list(dict.fromkeys(r["implementation"] for r in mine))
        width = 0.8 / len(names)
        streaming = workload == "streaming"
        values = []
        for k, name in enumerate(names):
            xs, ys = [], []
            for g, group in enumerate(groups):
                row = next((r for r in mine if r["group"] == group and r["implementation"] == name), None)
                if row is not None:
                    xs.append(g + (k - (len(names) - 1) / 2) * width)
                    ys.append(row["median_s"] * 1e6 / row["sequence_steps"] if streaming else row["gflops"])
            ax.bar(xs, ys, width, label=name, color=colours[name])
            values += ys
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([_shape_label(g) for g in groups], fontsize=8)
        if max(values) > 10 * min(values):  # a log axis only where the bars need it
            ax.set_yscale("log")
        ax.set_ylabel("µs per step (lower is better)" if streaming else "GFLOP/s (higher is better)")
        ax.set_title(TITLES[workload], fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))  # beside the bars, never on them
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RESULT_SUFFIXES = (".json", ".md", ".png", ".log", ".raw.json")


def claim_stamp(out, base):
    """The name of this run's files in ``out``: ``base``, or ``base-2``,
    ``base-3``, ... where a run of the same second on the same host has
    written or is writing them.  Creating the run's ``.raw.json`` (which
    pytest-benchmark then fills) claims a name, so two runs started at once
    do not take the same one."""
    n = 1
    while True:
        stamp = base if n == 1 else f"{base}-{n}"
        n += 1
        if any((out / f"{stamp}{suffix}").exists() for suffix in RESULT_SUFFIXES):
            continue
        try:
            (out / f"{stamp}.raw.json").open("x").close()
        except FileExistsError:
            continue
        return stamp


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + platform.node().split(".")[0]
    # Without these handlers, `kill` ended this process alone and left its
    # pytest running, along with the claimed .raw.json and the log.  Set
    # before the name is claimed, restored once the measurements are done.
    # A signal ignored is left ignored: nohup's SIGHUP (a handler here made
    # `nohup make bench` stop when its terminal closed), a background job's
    # SIGINT.
    previous = {}
    raw_json = log_path = None
    try:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, _stop)
        stamp = claim_stamp(out, base)
        raw_json, log_path = out / f"{stamp}.raw.json", out / f"{stamp}.log"
        start = time.perf_counter()
        returncode = run_pytest(args, raw_json, log_path)
        print("Start-up: cold and warm compile cache, in new processes", flush=True)
        startup = measure_startup()
    except (KeyboardInterrupt, _Stopped) as stop:
        for path in (raw_json, log_path):
            if path is not None:
                path.unlink(missing_ok=True)
        signum = stop.signum if isinstance(stop, _Stopped) else signal.SIGINT
        print(f"\nbench/run.py stopped ({signal.Signals(signum).name}): no results written", file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    wall = time.perf_counter() - start
    raw = json.loads(raw_json.read_text())
    rows, gemm = summarise(raw)
    tables = render_tables(rows, raw.get("skipped", []), gemm, raw["machine_info"], startup)
    failed = failures(log_path) if returncode != 0 else []
    if returncode != 0:
        tables += (
            f"\n\n**Incomplete run**: pytest exited with {returncode}; the benchmarks that failed are "
            f"missing above (their output: `{log_path.name}`, kept):\n\n"
            + "\n".join(f"* `{line}`" for line in failed or ["(no FAILED line: see the log)"])
            + "\n"
        )
    results = {
        "date": raw["datetime"], "wall_seconds": wall, "arguments": vars(args),
        "machine": raw["machine_info"], "commit": raw["commit_info"], "gemm_gflops": gemm,
        "startup": startup, "rows": rows, "skipped": raw.get("skipped", []), "failed": failed,
    }  # fmt: skip
    # Every timed round is in rows[...]["times"]; pytest-benchmark's own
    # per-round records (about 20x larger) are not kept.
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    (out / f"{stamp}.md").write_text(tables)
    charted = [r for r in rows if r["workload"] != "gemm"]
    if charted:  # a run whose every benchmark failed has none
        render_chart(charted, out / f"{stamp}.png")
    raw_json.unlink()
    if returncode == 0:
        log_path.unlink()
    print()
    print(tables)
    print(f"Wall time {wall:.0f} s. Results: {out / stamp}.json, .md, .png")
    if returncode != 0:
        sys.exit(f"pytest failed (exit {returncode}): {len(failed)} benchmarks missing; see {log_path}")


if __name__ == "__main__":
    main()
