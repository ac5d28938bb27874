"""Known corruptions: per-antenna complex gains and thermal noise.

Measurement equation (CASA's, as solved by ``gaincal``)::

    V_ij_obs = g_i * conj(g_j) * V_ij_true + noise,   g = amp * exp(i * phase)

with ``i`` = ANTENNA1 and ``j`` = ANTENNA2 of the row. Both polarisations get the same
gain. The phase of antenna ``a`` in spectral window ``s`` at time ``t`` is
``walk_a(t) + offset_a[s]``:

* ``walk_a`` is common to all spws (tropospheric, non-dispersive): a mean-reverting
  random walk (Ornstein-Uhlenbeck / AR(1) process) with stationary rms ``phase_rms_deg``
  and correlation time ``phase_timescale_s``: ``phi(t+dt) = rho phi(t) + sqrt(1 - rho^2)
  rms N(0, 1)``, ``rho = exp(-dt / tau)``, started from N(0, rms). Gaps between scans are
  handled by the same formula, so the phases decorrelate over long gaps.
* ``offset_a[s]`` ~ N(0, ``spw_phase_rms_deg``), constant in time (instrumental).
* ``amp_a`` = 1 + N(0, ``amp_rms``) (clipped to >= 0.05), constant in time and frequency.
* ``tau_a`` ~ N(0, ``delay_rms_ns``) ns, an instrumental delay constant in time: an extra
  phase ``2 pi nu tau_a`` at channel frequency ``nu`` (raw data before delay calibration;
  the phase slope across a spectral window decorrelates the channel average).

Noise: independent Gaussian of sigma ``noise_jy`` on the real and the imaginary part of
every visibility (so CASA's SIGMA = noise_jy, WEIGHT = 1 / noise_jy**2).

Random streams are independent per purpose (``seed``, purpose) so e.g. changing the noise
does not change the gains.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_STREAMS = {"phase": 1, "spw_offset": 2, "amp": 3, "noise": 4, "delay": 5}


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """Independent, reproducible random generator for ``purpose``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, _STREAMS[purpose]])


def phase_walk(rng: np.random.Generator, times_s: np.ndarray, rms_deg: float, timescale_s: float, n_ant: int) -> np.ndarray:
    """Mean-reverting random walk phases (deg), shape (n_ant, n_times), at sorted ``times_s``."""
    times = np.asarray(times_s, dtype=np.float64)
    nt = times.size
    out = np.zeros((n_ant, nt))
    if nt == 0 or rms_deg <= 0:
        return out
    steps = rng.standard_normal((n_ant, nt))
    out[:, 0] = rms_deg * steps[:, 0]
    dt = np.diff(times)
    rho = np.exp(-np.maximum(dt, 0.0) / float(timescale_s))
    innov = np.sqrt(np.maximum(0.0, 1.0 - rho**2)) * rms_deg
    for k in range(1, nt):
        out[:, k] = rho[k - 1] * out[:, k - 1] + innov[k - 1] * steps[:, k]
    return out


@dataclass
class Gains:
    """Per-antenna gain truth on a time grid (``times`` = MS TIME values, sorted)."""

    times: np.ndarray  # (nt,)
    phase_deg: np.ndarray  # (n_ant, nt), common to all spws
    spw_offset_deg: np.ndarray  # (n_ant, n_spw)
    amp: np.ndarray  # (n_ant,)
    delay_ns: np.ndarray | None = None  # (n_ant,), None = no delays

    def complex_gain(self, ant: np.ndarray, tidx: np.ndarray, spw: int) -> np.ndarray:
        """g for antenna ids ``ant`` at time indices ``tidx`` in spw ``spw`` (complex64)."""
        ph = np.radians(self.phase_deg[ant, tidx] + self.spw_offset_deg[ant, spw])
        return (self.amp[ant] * np.exp(1j * ph)).astype(np.complex64)


def make_gains(
    seed: int,
    times: np.ndarray,
    n_ant: int,
    n_spw: int,
    *,
    phase_rms_deg: float,
    phase_timescale_s: float,
    spw_phase_rms_deg: float,
    amp_rms: float,
    delay_rms_ns: float = 0.0,
) -> Gains:
    """Draw the gains of every antenna (each purpose from its own random stream)."""
    times = np.asarray(times, dtype=np.float64)
    phase = phase_walk(rng_for(seed, "phase"), times, phase_rms_deg, phase_timescale_s, n_ant)
    offs = spw_phase_rms_deg * rng_for(seed, "spw_offset").standard_normal((n_ant, n_spw))
    amp = np.maximum(0.05, 1.0 + amp_rms * rng_for(seed, "amp").standard_normal(n_ant))
    delay = delay_rms_ns * rng_for(seed, "delay").standard_normal(n_ant) if delay_rms_ns > 0 else None
    return Gains(times, phase, offs, amp, delay)


def apply_gains(
    vis: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, tidx: np.ndarray, spw: int, gains: Gains,
    freqs_hz: np.ndarray | None = None,
) -> np.ndarray:
    """``g_i conj(g_j) V`` for rows of one spw; ``vis`` has shape (nrow, ...), or (nrow,
    nchan) with ``freqs_hz`` (nchan,) when the gains have delays."""
    g = gains.complex_gain(ant1, tidx, spw) * np.conj(gains.complex_gain(ant2, tidx, spw))
    out = vis * g.reshape((-1,) + (1,) * (vis.ndim - 1))
    if gains.delay_ns is not None:
        if freqs_hz is None:
            raise ValueError("apply_gains: delays need the channel frequencies")
        dtau = (gains.delay_ns[ant1] - gains.delay_ns[ant2]) * 1e-9  # s, (nrow,)
        out = out * np.exp(2j * np.pi * dtau[:, None] * np.asarray(freqs_hz)[None, :]).astype(np.complex64)
    return out


def noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Complex Gaussian noise, sigma per real and imaginary part (complex64)."""
    if sigma <= 0:
        return np.zeros(shape, dtype=np.complex64)
    out = np.empty(shape, dtype=np.complex64)
    out.real = rng.standard_normal(shape, dtype=np.float32)
    out.imag = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(sigma)
    return out
