"""The layer against torch.nn.LSTM configured the same way, forward and backward."""

import numpy as np
import pytest
from conftest import assert_close, import_or_skip

import numba_lstm

torch = import_or_skip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def torch_twin(layer):
    """A torch.nn.LSTM with the layer's weights (b_ih = b, b_hh = 0)."""
    module = torch.nn.LSTM(
        layer.input_size, layer.hidden_size, layer.num_layers,
        bidirectional=layer.bidirectional, proj_size=layer.proj_size,
    ).to(TORCH_DTYPE[layer.dtype.type])  # fmt: skip
    with torch.no_grad():
        for k in range(layer.num_layers):
            for suffix in ("", "_reverse")[: layer.num_directions]:
                W = layer.params[f"W_l{k}{suffix}"]
                I_k = W.shape[0] - layer.output_size
                getattr(module, f"weight_ih_l{k}{suffix}").copy_(torch.from_numpy(W[:I_k].T.copy()))
                getattr(module, f"weight_hh_l{k}{suffix}").copy_(torch.from_numpy(W[I_k:].T.copy()))
                getattr(module, f"bias_ih_l{k}{suffix}").copy_(
                    torch.from_numpy(layer.params[f"b_l{k}{suffix}"])
                )
                getattr(module, f"bias_hh_l{k}{suffix}").zero_()
                if layer.proj_size:
                    W_hr = layer.params[f"W_hr_l{k}{suffix}"]
                    getattr(module, f"weight_hr_l{k}{suffix}").copy_(torch.from_numpy(W_hr.T.copy()))
    return module


def torch_grad(module, name):
    """Gradient of a native parameter name from the twin module's gradients."""
    k_suffix = name.split("_l", 1)[1]
    if name.startswith("W_hr"):
        return getattr(module, f"weight_hr_l{k_suffix}").grad.numpy().T
    if name.startswith("b"):
        return getattr(module, f"bias_ih_l{k_suffix}").grad.numpy()
    w_ih = getattr(module, f"weight_ih_l{k_suffix}").grad.numpy().T
    w_hh = getattr(module, f"weight_hh_l{k_suffix}").grad.numpy().T
    return np.concatenate([w_ih, w_hh])


CONFIGS = {
    "2 layers": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "projection": dict(proj_size=3),
    "2 layers bidirectional projection": dict(num_layers=2, bidirectional=True, proj_size=2),
}


@pytest.mark.parametrize("with_lengths", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("name", CONFIGS)
def test_layer_matches_torch(name, with_lengths, dtype):
    T, B, I, H = 7, 4, 5, 6
    layer = numba_lstm.LSTM(I, H, **CONFIGS[name], dtype=dtype, seed=0)
    module = torch_twin(layer)
    LD = layer.num_layers * layer.num_directions
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((LD, B, layer.output_size)).astype(dtype)
    c0 = rng.standard_normal((LD, B, H)).astype(dtype)
    lengths = np.array([7, 2, 5, 1]) if with_lengths else None

    y, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    dc_n = rng.standard_normal(c_n.shape).astype(dtype)
    dx = layer.backward(dy, dh_n, dc_n)

    x_t = torch.from_numpy(x).requires_grad_(True)
    h0_t = torch.from_numpy(h0).requires_grad_(True)
    c0_t = torch.from_numpy(c0).requires_grad_(True)
    if with_lengths:
        packed = pack_padded_sequence(x_t, torch.from_numpy(lengths), enforce_sorted=False)
        out, (hn_t, cn_t) = module(packed, (h0_t, c0_t))
        y_t, _ = pad_packed_sequence(out, total_length=T)
    else:
        y_t, (hn_t, cn_t) = module(x_t, (h0_t, c0_t))
    loss = (y_t * torch.from_numpy(dy)).sum() + (hn_t * torch.from_numpy(dh_n)).sum()
    loss = loss + (cn_t * torch.from_numpy(dc_n)).sum()
    loss.backward()

    assert_close(y, y_t.detach().numpy(), dtype, "y")
    assert_close(h_n, hn_t.detach().numpy(), dtype, "h_n")
    assert_close(c_n, cn_t.detach().numpy(), dtype, "c_n")
    assert_close(dx, x_t.grad.numpy(), dtype, "dx")
    assert_close(layer.grads["h0"], h0_t.grad.numpy(), dtype, "dh0")
    assert_close(layer.grads["c0"], c0_t.grad.numpy(), dtype, "dc0")
    for pname in layer.params:
        assert_close(layer.grads[pname], torch_grad(module, pname), dtype, pname)
