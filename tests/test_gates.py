"""split_gates views and the parameter table."""

import re

import numpy as np
import pytest

from numba_lstm import convert, gates

I, H = 4, 2


def _params(config, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in convert.parameter_shapes(config).items()}


def test_split_gates_returns_the_blocks_as_views_that_write_through(dtype):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((I + H, 4 * H)).astype(dtype)
    b = rng.standard_normal(4 * H).astype(dtype)
    W0, b0 = W.copy(), b.copy()
    parts = gates.split_gates(W, b, I)
    assert list(parts) == ["i", "f", "g", "o"]
    for j, q in enumerate("ifgo"):
        p = parts[q]
        assert p.input.shape == (I, H) and p.recurrent.shape == (H, H) and p.bias.shape == (H,)
        assert p.input.dtype == dtype
        np.testing.assert_array_equal(p.input, W0[:I, j * H : (j + 1) * H])
        np.testing.assert_array_equal(p.recurrent, W0[I:, j * H : (j + 1) * H])
        np.testing.assert_array_equal(p.bias, b0[j * H : (j + 1) * H])
        assert np.shares_memory(p.input, W) and np.shares_memory(p.bias, b)
    # Writing through the forget gate's views changes exactly its columns of W and b.
    parts["f"].input[...] = 7.0
    parts["f"].recurrent[0, 1] = -3.0
    parts["f"].bias[:] = 1.0
    expected_W, expected_b = W0.copy(), b0.copy()
    expected_W[:I, H : 2 * H] = 7.0
    expected_W[I, H + 1] = -3.0
    expected_b[H : 2 * H] = 1.0
    np.testing.assert_array_equal(W, expected_W)
    np.testing.assert_array_equal(b, expected_b)


def test_split_gates_of_a_non_contiguous_or_projected_kernel_are_still_views():
    W = np.asfortranarray(np.arange((I + 3) * 4 * H, dtype=np.float64).reshape(I + 3, 4 * H))
    b = np.zeros(4 * H)
    parts = gates.split_gates(W, b, I)  # 3 recurrent rows: a projected layer with P = 3
    assert parts["g"].recurrent.shape == (3, H)
    parts["o"].recurrent[-1, -1] = -1.0
    assert W[-1, -1] == -1.0


def test_split_gates_refusals_name_the_argument():
    W, b = np.zeros((I + H, 4 * H), np.float32), np.zeros(4 * H, np.float32)
    with pytest.raises(ValueError, match=r"input_size must be in \[1, 5\].*got 6"):
        gates.split_gates(W, b, I + H)
    with pytest.raises(TypeError, match="input_size must be an integer"):
        gates.split_gates(W, b, 4.0)
    with pytest.raises(ValueError, match=r"b must have shape \(8,\).*got \(7,\)"):
        gates.split_gates(W, b[:7], I)
    with pytest.raises(ValueError, match=r"W must have shape \(I \+ H, 4H\).*got \(6, 7\)"):
        gates.split_gates(W[:, :7], b, I)
    with pytest.raises(TypeError, match="W must be a numpy array"):
        gates.split_gates(W.tolist(), b, I)
    with pytest.raises(TypeError, match="b has dtype float64 but W has float32"):
        gates.split_gates(W, b.astype(np.float64), I)
    with pytest.raises(TypeError, match="W must have dtype float32 or float64, got int64"):
        gates.split_gates(W.astype(np.int64), b, I)
    # A W of fewer than 2 rows said "input_size must be in [1, 0]".
    for rows in (1, 0):
        with pytest.raises(ValueError, match=rf"W must have at least 2 rows .*got shape \({rows}, 8\)"):
            gates.split_gates(W[:rows], b, 1)
    # Masked arrays were split into masked views, where every other entry point refuses them.
    with pytest.raises(TypeError, match="W is a masked array"):
        gates.split_gates(np.ma.masked_array(W), b, I)
    with pytest.raises(TypeError, match="b is a masked array"):
        gates.split_gates(W, np.ma.masked_array(b), I)


def _row(table, label):
    """The (shape, count) of the first row whose name column is ``label``."""
    for line in table.splitlines():
        m = re.match(rf"^{re.escape(label)}\s+(\(.*?\))?\s*([\d,]+)$", line)
        if m:
            return m.group(1), int(m.group(2).replace(",", ""))
    raise AssertionError(f"no row {label!r} in\n{table}")


def test_parameter_table_of_4_inputs_and_2_units_totals_56():
    # Keras prints 56 parameters for LSTM(2) on (100, 4) input: kernel (4, 8),
    # recurrent_kernel (2, 8), bias (8,).
    table = gates.parameter_table(
        {"input_size": 4, "hidden_size": 2}, _params({"input_size": 4, "hidden_size": 2})
    )
    assert _row(table, "total") == (None, 56)
    assert _row(table, "W_l0") == ("(6, 8)", 48)
    assert _row(table, "b_l0") == ("(8,)", 8)
    for gate in ("i (input)", "f (forget)", "g (candidate)", "o (output)"):
        assert _row(table, f"  {gate} x") == ("(4, 2)", 8)
        assert _row(table, f"  {gate} h") == ("(2, 2)", 4)
        assert _row(table, f"  {gate}") == ("(2,)", 2)


def test_parameter_table_of_a_stacked_bidirectional_projected_model():
    config = {"input_size": 3, "hidden_size": 5, "num_layers": 2, "bidirectional": True, "proj_size": 2}
    table = gates.parameter_table(config, _params(config, np.float64))
    # Per direction, layer 0: W (3 + 2, 20) = 100, b 20, W_hr (5, 2) = 10 -> 130;
    # layer 1 reads P * 2 = 4 inputs: W (4 + 2, 20) = 120, b 20, W_hr 10 -> 150.
    assert _row(table, "total") == (None, 2 * 130 + 2 * 150)
    assert _row(table, "W_l1_reverse") == ("(6, 20)", 120)
    assert _row(table, "W_hr_l1_reverse") == ("(5, 2)", 10)
    lines = table.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("W_l1_reverse")))
    assert _row("\n".join(lines[start:]), "  i (input) x") == ("(4, 5)", 20)
    assert _row("\n".join(lines[start:]), "  i (input) h") == ("(2, 5)", 10)
    assert "float64" in lines[0]


def test_parameter_table_total_matches_torch_count():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[test]')")
    config = {"input_size": 7, "hidden_size": 6, "num_layers": 3, "bidirectional": True, "proj_size": 0}
    module = torch.nn.LSTM(7, 6, num_layers=3, bidirectional=True)
    # torch keeps two biases (b_ih, b_hh) where the native layout keeps one.
    two_bias = 3 * 2 * 4 * 6
    expected = sum(p.numel() for p in module.parameters()) - two_bias
    table = gates.parameter_table(config, _params(config))
    assert _row(table, "total") == (None, expected)


def test_parameter_table_refuses_params_not_matching_config():
    config = {"input_size": 4, "hidden_size": 2}
    with pytest.raises(ValueError, match=r"params\['W_l0'\] must have shape \(6, 8\)"):
        gates.parameter_table(config, {"W_l0": np.zeros((5, 8), np.float32), "b_l0": np.zeros(8, np.float32)})
