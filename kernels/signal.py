"""Signal processing: DFT, STFT, MelWeightMatrix. (HannWindow, HammingWindow and BlackmanWindow are
ONNX functions and expand at import.)

Signals follow ONNX's real representation: a trailing axis of 1 (real) or 2 (real, imaginary).
The transforms use numpy's pocketfft (vectorised over the batch, float64 internally), cast back
to the input's type.
"""
from __future__ import annotations

import numpy as np

from jitort import memory
from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


def _complex(x: np.ndarray, op_name: str) -> np.ndarray:
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise InvalidArgument(f"{op_name}: the last axis must be 1 (real) or 2 (complex), got shape {list(x.shape)}")
    # float64 signals transform in double precision, the rest in single (as numpy's pocketfft does
    # for complex64): the results then round like the spec's reference computation.
    ft, ct = (np.float64, np.complex128) if x.dtype == np.float64 else (np.float32, np.complex64)
    if x.shape[-1] == 1:
        return x[..., 0].astype(ft)
    z = np.empty(x.shape[:-1], ct)
    z.real = x[..., 0]
    z.imag = x[..., 1]
    return z


def _real_pair(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return contiguous(np.stack([z.real, z.imag], axis=-1).astype(dtype))


def _dft(x: np.ndarray, length: np.ndarray | None, axis: int, inverse: int, onesided: int) -> np.ndarray:
    rank = x.ndim
    if not -rank <= axis < rank:
        raise InvalidArgument(f"DFT: axis {axis} is out of range for input rank {rank}")
    ax = axis % rank
    if ax == rank - 1:
        raise InvalidArgument("DFT: axis may not be the last (real/imaginary) axis")
    if length is not None:
        n = int(np.asarray(length).reshape(-1)[0])
        if n <= 0:
            raise InvalidArgument(f"DFT: dft_length must be positive, got {n}")
    elif inverse and onesided:
        n = 2 * (x.shape[ax] - 1)
    else:
        n = x.shape[ax]
    memory.check("DFT", x.shape[:ax] + (n,) + x.shape[ax + 1:-1] + (2,), np.complex128)  # numpy's work array
    z = _complex(x, "DFT")
    if inverse:
        if onesided:
            return contiguous(np.fft.irfft(z, n=n, axis=ax)[..., None].astype(x.dtype))
        return _real_pair(np.fft.ifft(z, n=n, axis=ax), x.dtype)
    y = np.fft.fft(z, n=n, axis=ax)
    if onesided:
        y = np.take(y, np.arange(n // 2 + 1), axis=ax)
    return _real_pair(y, x.dtype)


@op("DFT", since=17)
def DFT17(x: np.ndarray, dft_length: np.ndarray | None = None, *, axis: int = 1, inverse: int = 0,
          onesided: int = 0) -> np.ndarray:
    return _dft(x, dft_length, axis, inverse, onesided)


@op("DFT", since=20)
def DFT20(x: np.ndarray, dft_length: np.ndarray | None = None, axis: np.ndarray | None = None, *,
          inverse: int = 0, onesided: int = 0) -> np.ndarray:
    ax = -2 if axis is None else int(np.asarray(axis).reshape(-1)[0])
    return _dft(x, dft_length, ax, inverse, onesided)


@op("STFT", since=17)
def STFT(signal: np.ndarray, frame_step: np.ndarray, window: np.ndarray | None = None,
         frame_length: np.ndarray | None = None, *, onesided: int = 1) -> np.ndarray:
    """[batch, length, 1|2] -> [batch, frames, bins, 2]: windowed DFTs of frames every frame_step."""
    if signal.ndim != 3:
        raise InvalidArgument(f"STFT: signal must be [batch, length, 1 or 2], got {list(signal.shape)}")
    step = int(np.asarray(frame_step).reshape(-1)[0])
    if frame_length is not None:
        flen = int(np.asarray(frame_length).reshape(-1)[0])
    elif window is not None:
        flen = int(window.shape[0])
    else:
        flen = signal.shape[1]
    wt = np.float64 if signal.dtype == np.float64 else np.float32
    w = np.ones(flen, wt) if window is None else window.astype(wt)
    if w.shape[0] != flen:
        raise InvalidArgument(f"STFT: window of length {w.shape[0]} for frame_length {flen}")
    if step <= 0 or flen <= 0 or flen > signal.shape[1]:
        raise InvalidArgument(f"STFT: frame_step {step} / frame_length {flen} invalid for a signal of "
                              f"length {signal.shape[1]}")
    z = _complex(signal, "STFT")
    n_frames = 1 + (signal.shape[1] - flen) // step
    idx = np.arange(n_frames)[:, None] * step + np.arange(flen)[None, :]
    frames = z[:, idx] * w  # [batch, frames, flen]
    y = np.fft.fft(frames, n=flen, axis=-1)
    if onesided:
        y = y[..., : flen // 2 + 1]
    return _real_pair(y, signal.dtype)


@op("MelWeightMatrix", since=17)
def MelWeightMatrix(num_mel_bins: np.ndarray, dft_length: np.ndarray, sample_rate: np.ndarray,
                    lower_edge_hertz: np.ndarray, upper_edge_hertz: np.ndarray, *,
                    output_datatype: int = 1) -> np.ndarray:
    """Triangular mel filters [dft_length // 2 + 1, num_mel_bins], with the spec's integer bin edges."""
    mels, n, rate = (int(np.asarray(v).reshape(-1)[0]) for v in (num_mel_bins, dft_length, sample_rate))
    lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in (lower_edge_hertz, upper_edge_hertz))
    if mels <= 0 or n <= 0 or rate <= 0 or not 0 <= lo < hi:
        raise InvalidArgument(f"MelWeightMatrix: invalid arguments num_mel_bins={mels}, dft_length={n}, "
                              f"sample_rate={rate}, edges=({lo}, {hi})")
    memory.check("MelWeightMatrix", (n // 2 + 1, mels), np.float64)
    bins = np.arange(0, mels + 2)
    lo_mel = 2595 * np.log1p(lo / 700) / np.log(10)
    hi_mel = 2595 * np.log1p(hi / 700) / np.log(10)
    step = (hi_mel - lo_mel) / bins.shape[0]
    hz = 700 * np.expm1((bins * step + lo_mel) / 2595 * np.log(10))
    edges = (((n + 1) * hz) // rate).astype(int)
    out = np.zeros((n // 2 + 1, mels))
    for i in range(mels):
        left, center, right = edges[i], edges[i + 1], edges[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            for j in range(left, center + 1):
                out[j, i] = (j - left) / (center - left)
        for j in range(center, right):
            out[j, i] = (right - j) / (right - center)
    from onnx import helper  # not at the top: onnx imports ml_dtypes (~0.7 s), for models that need it only
    return contiguous(out.astype(helper.tensor_dtype_to_np_dtype(output_datatype)))
