"""Quick runs of the training examples: each must learn, not merely run.

The thresholds are loose (a short run, small sizes) but each sits far from
what an untrained or broken model scores: chance on digits is 10%, the best
constant guess on the adding problem scores 0.167, and a model that only
learnt the mean of the sunspot series does worse than the naive forecast.
"""

import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # examples/ is a folder of the repository, not part of the package
    sys.path.insert(0, str(ROOT))

for _name in ("sklearn", "statsmodels", "tqdm", "matplotlib", "threadpoolctl"):
    pytest.importorskip(_name, reason=f"{_name} is not installed (pip install -e '.[examples]')")


def assert_png(path):
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


def test_digits_quick(tmp_path, capsys):
    from examples import digits

    out = tmp_path / "digits.png"
    result = digits.main(["--quick", "--no-progress", "--out", str(out)])
    assert result["test_accuracy"] > 0.80, result
    assert_png(out)
    assert "held-out accuracy" in capsys.readouterr().out


def test_adding_quick(tmp_path):
    from examples import adding

    out = tmp_path / "adding.png"
    result = adding.main(["--quick", "--no-progress", "--out", str(out)])
    assert result["test_mse"] < 0.05 < adding.BASELINE, result  # 3x below the best constant guess
    assert_png(out)


def test_sunspots_quick(tmp_path):
    from examples import sunspots

    out = tmp_path / "sunspots.png"
    result = sunspots.main(["--quick", "--no-progress", "--out", str(out)])
    assert result["test_rmse"] < 0.8 * result["naive_rmse"], result
    assert_png(out)
    assert_png(tmp_path / "sunspots_forecast.png")


def test_jit_control_quick(tmp_path):
    """The LSTM, run by numba_lstm.jit inside an @njit loop, must actually control the spring."""
    from examples import jit_control

    out = tmp_path / "jit_control.png"
    result = jit_control.main(["--quick", "--no-progress", "--out", str(out)])
    # run() itself checks that the @njit loop and the Python-driven loop give the same trajectories.
    assert result["rms_lstm"] < 0.6 * result["rms_free"], result
    assert result["rms_expert"] < result["rms_free"], result
    assert result["us_per_step_njit"] > 0
    assert_png(out)


def test_adding_data_has_the_stated_baseline():
    """Two markers per sequence, one in each half; the target is their sum, with variance 1/6."""
    from examples.adding import BASELINE, make_data

    T, n = 40, 20000
    x, target = make_data(n, T, np.random.default_rng(0))
    markers = x[:, :, 1]
    np.testing.assert_array_equal(markers[: T // 2].sum(axis=0), 1)
    np.testing.assert_array_equal(markers[T // 2 :].sum(axis=0), 1)
    np.testing.assert_allclose(target[:, 0], (x[:, :, 0] * markers).sum(axis=0), rtol=1e-6)
    assert np.mean((target - 1.0) ** 2) == pytest.approx(BASELINE, rel=0.03)


BAD_OPTIONS = [
    ("digits", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    ("digits", ["--threads", "0"], "argument --threads: must be at least 1"),
    ("digits", ["--bogus"], "unrecognized arguments: --bogus"),
    ("digits", ["--batch", "-5"], "argument --batch: must be at least 1"),  # trained nothing, exit 0
    ("digits", ["--hidden", "0"], "argument --hidden: must be at least 1"),
    ("digits", ["--seed", "-1"], "argument --seed: must be at least 0"),
    ("digits", ["--lr", "nan"], "argument --lr: must be a finite number above 0"),
    ("digits", ["--out", "curve"], "argument --out: must be a .png file"),  # matplotlib wrote curve.png
    ("adding", ["--length", "1"], "--length must be at least 2"),
    ("adding", ["--train", "0"], "argument --train: must be at least 1"),
    ("sunspots", ["--test-fraction", "1"], "argument --test-fraction: must be strictly between 0 and 1"),
    ("sunspots", ["--window", "300"], "leave 0 training"),
    ("jit_control", ["--eval", "0"], "argument --eval: must be at least 1"),  # became 100 episodes
]


@pytest.mark.parametrize(("example", "argv", "message"), BAD_OPTIONS)
def test_bad_options_exit_with_a_usage_error(example, argv, message, tmp_path, capsys):
    """Each bad option exits as argparse does (status 2), naming the option, before any training."""
    import importlib

    main = importlib.import_module(f"examples.{example}").main
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--no-progress", "--out", str(tmp_path / "curve.png"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "curve.png").exists()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the divergence itself
def test_diverged_training_is_a_clear_error(tmp_path):
    from examples import sunspots

    with pytest.raises(
        SystemExit, match="training diverged at --lr 1e[+]30: no epoch had a finite validation"
    ):
        sunspots.main(["--epochs", "2", "--lr", "1e30", "--no-progress", "--out", str(tmp_path / "s.png")])


def test_predict_keeps_no_cache():
    """Inference in the examples runs with cache=False: nothing is kept for a backward."""
    import numba_lstm
    from examples._common import SequenceModel

    model = SequenceModel(2, 8, 1, seed=0)
    out = model.predict(np.zeros((5, 3, 2), np.float32), batch_size=2)
    assert out.shape == (3, 1)
    with pytest.raises(numba_lstm.layer.NotReadyError, match="cache=False"):
        model.lstm.backward(np.zeros((5, 1, 8), np.float32))


def test_a_missing_extra_is_named(monkeypatch, capsys):
    import importlib.util

    from examples import adding

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "tqdm" else find_spec(name))
    with pytest.raises(SystemExit) as exit_info:
        adding.main(["--quick"])
    assert exit_info.value.code == 1
    assert (
        "the examples need their extra: pip install -e '.[examples]' (missing: tqdm)"
        in capsys.readouterr().err
    )
