"""An LSTM controller inside a user's ``@njit`` simulation loop (``numba_lstm.jit``).

The system is a lightly damped mass on a spring pushed by random forces,
``x'' = -w² x - z x' + u + noise``.  The controller only sees the position,
through sensor noise, and must push it back to 0.  An expert PD controller
``u = -kp x - kd x'`` that sees the true position and velocity shows what is
possible.  The LSTM is a learned observer: from the noisy positions alone it
estimates the true position and velocity (the velocity it must infer from what
it remembers), trained in NumPy with this package's ``Dense``, ``mse_*`` and
``Adam`` on simulated episodes; the controller applies the same PD law to its
estimates.

The closed-loop evaluation is one ``@numba.njit`` function written here: per
time step it calls ``numba_lstm.jit.step_into`` (one LSTM step, no
allocation), applies the dense head and integrates the system, with no Python
between the steps.  The figures are the RMS position without control, with
the expert, with the LSTM and with the expert's PD law applied to the noisy
sensor (velocity by finite differences), and the time per simulated step,
against the same loop driven from Python (one ``step_into`` call per step).

On this linear system the plain PD law on the raw sensor does better than the
learned observer (the mass's inertia filters the noise of the differentiated
position, while the LSTM's estimate lags): the point here is running a trained
LSTM inside Numba and what a step costs there, not the best controller.

    python -m examples.jit_control            # the full run
    python -m examples.jit_control --quick    # the test suite's run
"""

import time

import numba
import numpy as np

from examples._common import (
    MSE,
    SequenceModel,
    Stopwatch,
    option,
    parser,
    progress,
    run_example,
    save_curves,
    train_epoch,
)
from numba_lstm import jit
from numba_lstm.optim import Adam

DT = 0.05  # seconds per step
OMEGA, DAMPING = 2.0, 0.1  # natural frequency (rad/s) and damping of the spring
KP, KD = 4.0, 4.0  # the expert's PD gains
FORCE_NOISE, SENSOR_NOISE = 3.0, 0.1  # standard deviations


@numba.njit(cache=True)
def advance(x, v, u, force):
    """One semi-implicit Euler step of the spring; returns ``(x, v)``."""
    v = v + DT * (-OMEGA * OMEGA * x - DAMPING * v + u + force)
    return x + DT * v, v


@numba.njit(cache=True)
def simulate_expert(x0, v0, forces, sensor, explore, gain):
    """Episodes under the expert (``gain`` = 1) or without control (``gain`` = 0).

    x0, v0 (E,); forces, sensor, explore (T, E) noises.  Returns the
    observed positions ``obs (T, E)``, the true state when each observation
    was taken ``state (T, E, 2)`` (position, velocity: what the LSTM learns to
    estimate) and the true positions after each step ``pos (T, E)``.
    ``explore`` is added to the action applied, so that the data also visits
    states off the expert's path.
    """
    T, E = forces.shape
    obs = np.empty((T, E))
    state = np.empty((T, E, 2))
    pos = np.empty((T, E))
    for e in range(E):
        x, v = x0[e], v0[e]
        for t in range(T):
            obs[t, e] = x + sensor[t, e]
            state[t, e, 0] = x
            state[t, e, 1] = v
            u = gain * (-KP * x - KD * v)
            x, v = advance(x, v, u + explore[t, e], forces[t, e])
            pos[t, e] = x
    return obs, state, pos


@numba.njit(cache=True)
def simulate_sensor_pd(x0, v0, forces, sensor):
    """Episodes under the PD law applied to the sensor: velocity by finite differences of ``obs``."""
    T, E = forces.shape
    pos = np.empty((T, E))
    for e in range(E):
        x, v = x0[e], v0[e]
        previous = x + sensor[0, e]
        for t in range(T):
            obs = x + sensor[t, e]
            u = -KP * obs - KD * (obs - previous) / DT
            previous = obs
            x, v = advance(x, v, u, forces[t, e])
            pos[t, e] = x
    return pos


@numba.njit(cache=True)
def simulate_lstm(x0, v0, forces, sensor, W, b, W_head, b_head):
    """Episodes under the LSTM controller: the user's loop, all in Numba.

    W (1 + H, 4H), b (4H,) the LSTM in the native layout; W_head (H, 2),
    b_head (2,) the dense head that reads the estimated position and velocity
    off the hidden state.  Returns the true positions ``pos (T, E)``.
    """
    T, E = forces.shape
    H = b.shape[0] // 4
    dtype = W.dtype
    obs = np.empty((1, 1), dtype)
    h = np.empty((1, H), dtype)
    c = np.empty((1, H), dtype)
    work = np.empty(jit.work_size(1, H), dtype)
    pos = np.empty((T, E))
    for e in range(E):
        x, v = x0[e], v0[e]
        h[:] = 0
        c[:] = 0
        for t in range(T):
            obs[0, 0] = x + sensor[t, e]
            jit.step_into(obs, h, c, W, b, h, c, work)  # in place: h, c <- the next state
            x_hat, v_hat = b_head[0], b_head[1]
            for j in range(H):
                x_hat += h[0, j] * W_head[j, 0]
                v_hat += h[0, j] * W_head[j, 1]
            x, v = advance(x, v, -KP * x_hat - KD * v_hat, forces[t, e])
            pos[t, e] = x
    return pos


def simulate_lstm_from_python(x0, v0, forces, sensor, W, b, W_head, b_head):
    """The same loop as ``simulate_lstm`` driven from Python: one jitted call per step."""
    T, E = forces.shape
    H = b.shape[0] // 4
    obs = np.empty((1, 1), W.dtype)
    h, c = np.empty((1, H), W.dtype), np.empty((1, H), W.dtype)
    work = np.empty(jit.work_size(1, H), W.dtype)
    pos = np.empty((T, E))
    for e in range(E):
        x, v = x0[e], v0[e]
        h[:] = 0
        c[:] = 0
        for t in range(T):
            obs[0, 0] = x + sensor[t, e]
            jit.step_into(obs, h, c, W, b, h, c, work)
            x_hat, v_hat = h[0] @ W_head + b_head
            x, v = advance(x, v, float(-KP * x_hat - KD * v_hat), forces[t, e])
            pos[t, e] = x
    return pos


def episodes(rng, E, T):
    """Initial states and noises of E episodes of T steps."""
    return (
        rng.uniform(-1, 1, E),
        rng.uniform(-1, 1, E),
        rng.normal(0, FORCE_NOISE, (T, E)),
        rng.normal(0, SENSOR_NOISE, (T, E)),
    )


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def main(argv=None):
    p = parser(
        "jit_control",
        "Learn a state observer with an LSTM, then control with it in @njit.",
        epochs=(40, 12),
        hidden=32,
        batch=32,
        lr=1e-2,
    )
    option(p, "--train", (1024, 256), "training episodes")
    option(p, "--length", 200, "steps per training episode")
    option(p, "--eval", (500, 100), "evaluation episodes of 400 steps")
    return run_example(p, run, argv)


def run(args):
    """Train, simulate, time; return the figures as a dict."""
    clock = Stopwatch()
    rng = np.random.default_rng(args.seed)
    n_train, T, H = args.train, args.length, args.hidden

    # 1. Data: episodes under the expert, with exploration noise on its actions.
    x0, v0, forces, sensor = episodes(rng, n_train, T)
    obs, state, _ = simulate_expert(x0, v0, forces, sensor, rng.normal(0, 1.0, (T, n_train)), 1.0)
    x_train = obs[:, :, None].astype(np.float32)  # (T, N, 1) what the controller sees
    y_train = state.astype(np.float32)  # (T, N, 2) the true position and velocity

    # 2. The observer: an LSTM and a dense head read at every step, (T, B, 1) -> (T, B, 2), mean squared error.
    model = SequenceModel(1, H, 2, every_step=True, seed=args.seed)
    opt = Adam(model.params, lr=args.lr)
    epochs, losses = [], []
    for epoch in progress(range(args.epochs), args, desc="observer", unit="epoch"):
        losses.append(train_epoch(model, opt, MSE, x_train, y_train, batch=args.batch, rng=rng, max_norm=1.0))
        epochs.append(epoch + 1)
    train_seconds = clock()

    # 3. Closed loop on new episodes, 400 steps each (twice the training length).
    E, T_eval = args.eval, 400
    x0, v0, forces, sensor = episodes(np.random.default_rng(args.seed + 1000), E, T_eval)
    no_noise = np.zeros((T_eval, E))
    free = simulate_expert(x0, v0, forces, sensor, no_noise, 0.0)[2]
    expert = simulate_expert(x0, v0, forces, sensor, no_noise, 1.0)[2]
    sensor_pd = simulate_sensor_pd(x0, v0, forces, sensor)
    weights = (model.lstm.W, model.lstm.b, model.head.W, model.head.b)
    first = (x0[:1], v0[:1], forces[:1, :1], sensor[:1, :1])  # one step of one episode
    simulate_lstm(*first, *weights)  # compile (or load) first: neither timing includes compilation
    simulate_lstm_from_python(*first, *weights)
    start = time.perf_counter()
    controlled = simulate_lstm(x0, v0, forces, sensor, *weights)
    njit_us = (time.perf_counter() - start) / (E * T_eval) * 1e6
    n_python = min(E, 20)
    start = time.perf_counter()
    from_python = simulate_lstm_from_python(x0[:n_python], v0[:n_python], forces[:, :n_python],
                                            sensor[:, :n_python], *weights)  # fmt: skip
    python_us = (time.perf_counter() - start) / (n_python * T_eval) * 1e6
    np.testing.assert_allclose(from_python, controlled[:, :n_python], rtol=1e-6, atol=1e-6)
    seconds, cpu_seconds = clock(), clock.cpu()

    result = {
        "rms_free": rms(free),
        "rms_expert": rms(expert),
        "rms_sensor_pd": rms(sensor_pd),
        "rms_lstm": rms(controlled),
        "us_per_step_njit": njit_us,
        "us_per_step_python": python_us,
        "train_seconds": train_seconds,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    save_curves(
        args.out,
        {"state estimate MSE (training)": (epochs, losses)},
        f"LSTM observer of position and velocity, H = {H}",
        ylabel="mean squared error of (x, v)",
        hlines={"always (0, 0)": float(np.mean(np.square(y_train)))},
    )
    print(
        f"spring under random forces, {E} episodes of {T_eval} steps: RMS position {result['rms_free']:.3f} "
        f"uncontrolled, {result['rms_expert']:.3f} with the PD expert (true state), {result['rms_lstm']:.3f} "
        f"with the LSTM observer (noisy position only), {result['rms_sensor_pd']:.3f} with the PD law on the noisy "
        f"position (finite-difference velocity). {njit_us:.2f} us per simulated step in @njit "
        f"(LSTM step + head + physics, B = 1, H = {H}) against {python_us:.2f} us driven from Python; "
        f"observer training {train_seconds:.1f} s, "
        f"{seconds:.1f} s wall time ({cpu_seconds:.1f} s CPU) in all; "
        f"loss curve in {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
