"""The host side of jitort's CUDA kernels: specs, compilation, the per-run context, transfers.

A library kernel is a plain Python function plus, through ``@signatures(keys, make)``, one numba
signature per key (a dtype name, or a few joined by ``,``). ``compiled(fn, key)`` decorates it with
``cuda.jit(signature)`` on first use (a GPU or the simulator is needed); ``ptx(fn, key, cc)``
compiles it with NVVM alone (no driver) and ``link_cubin`` links PTX to a cubin with nvJitLink and
reads the registers / shared memory the linker reports — the checks CI can run without a GPU.

A ``Context`` is what one run of a CUDA plan uses: one stream (every launch and copy of the run
goes to it, in order), an arena of device buffers reused across runs (``alloc(slot, shape,
dtype)``: each slot is a byte buffer that grows to the largest size it has served; the plan's
liveness analysis lets values whose lifetimes do not overlap share a slot) and a device error
flag that kernels set where the CPU kernels would raise (an out-of-range Gather index). A plan
holds a ``ContextPool`` so concurrent ``run`` calls never share a stream or a buffer.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from numba import cuda, types
from numba.core import config as _numba_config

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented

SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)

# The simulator runs every CUDA thread as a Python thread: keep blocks small there. The kernels
# are correct for any power-of-two block size from 32 to MAX_THREADS.
THREADS = 32 if SIMULATOR else 256        # grid-stride kernels
MAX_THREADS = 32 if SIMULATOR else 256    # row kernels (one block per row)
SMEM = 256                                # scratch per block for reductions (>= MAX_THREADS)
FLOATS = ("float32", "float64")
MOVE_KEYS = ("uint8", "uint16", "uint32", "uint64")  # data movement works on the bytes


# --- kernel specs ------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class KernelSpec:
    fn: Callable[..., None]
    make: Callable[..., Any]          # make(*numba_types_of_key) -> numba signature
    keys: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.fn.__name__

    def signature(self, key: str) -> Any:
        if key not in self.keys:
            raise OrtNotImplemented(f"CUDA kernel {self.name} has no variant for {key} (has {list(self.keys)})")
        return self.make(*(_nbtype(k) for k in key.split(",")))


def _nbtype(name: str) -> Any:
    return types.boolean if name == "bool" else getattr(types, name)


def signatures(keys: Sequence[str], make: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Attach a KernelSpec to a plain kernel function (the function itself stays plain)."""
    def deco(fn: Callable) -> Callable:
        fn.__jitort_spec__ = KernelSpec(fn, make, tuple(keys))  # type: ignore[attr-defined]
        return fn
    return deco


def spec_of(fn: Callable) -> KernelSpec:
    return fn.__jitort_spec__  # type: ignore[attr-defined,no-any-return]


def A(t: Any, ndim: int = 1) -> Any:
    """A C-contiguous array type (kernels take flat 1-D views unless they say otherwise)."""
    return types.Array(t, ndim, "C")


_compiled: dict[tuple[Callable, str], Any] = {}
_compile_lock = threading.Lock()


def compiled(fn: Callable, key: str) -> Any:
    """The launchable kernel for ``fn`` at ``key`` (``cuda.jit`` with its signature, once per process)."""
    k = _compiled.get((fn, key))
    if k is None:
        with _compile_lock:
            k = _compiled.get((fn, key))
            if k is None:
                k = _compiled[(fn, key)] = cuda.jit(spec_of(fn).signature(key))(fn)
    return k


def compiled_fused(fn: Callable, signature: Any) -> Any:
    """A generated fused elementwise kernel (``jitort.codegen.cuda``), decorated once."""
    k = _compiled.get((fn, "fused"))
    if k is None:
        with _compile_lock:
            k = _compiled.get((fn, "fused"))
            if k is None:
                k = _compiled[(fn, "fused")] = cuda.jit(signature)(fn)
    return k


_ptx_cache: dict[tuple[Callable, str, tuple[int, int]], str] = {}


def ptx(fn: Callable, key: str, cc: tuple[int, int] = (9, 0)) -> str:
    """PTX for one kernel variant with NVVM only: no GPU, no driver (memoised per process)."""
    text = _ptx_cache.get((fn, key, tuple(cc)))  # type: ignore[arg-type]
    if text is None:
        text, _ = cuda.compile_ptx(fn, spec_of(fn).signature(key).args, cc=tuple(cc))
        text = _ptx_cache[(fn, key, tuple(cc))] = str(text)  # type: ignore[index]
    return text


# --- nvJitLink: PTX -> cubin, and the resources the linker reports -------------------------------

_RES = re.compile(r"used (\d+) registers.*?(\d+) stack, (\d+) bytes smem", re.S)
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def nvjitlink_available() -> bool:
    try:
        from cuda.bindings import nvjitlink
        nvjitlink.version()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no linker here"
        return False


def link_cubin(ptx_text: str, cc: tuple[int, int] = (9, 0), name: str = "kernel") -> tuple[bytes, dict[str, int]]:
    """Link PTX to an sm_XY cubin with nvJitLink; returns (cubin, {registers, shared_bytes, stack_bytes,
    spill_stores, spill_loads}) as the linker's verbose log reports them (first kernel in the PTX)."""
    from cuda.bindings import nvjitlink as nj
    opts = [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose"]
    h = nj.create(len(opts), opts)
    try:
        data = ptx_text.encode()
        try:
            nj.add_data(h, nj.InputType.PTX, data, len(data), name)
            nj.complete(h)
        except nj.nvJitLinkError as e:
            n = nj.get_error_log_size(h)
            log = bytearray(n)
            if n:
                nj.get_error_log(h, log)
            raise Fail(f"nvJitLink failed on {name}: {e}: {bytes(log).decode(errors='replace')}") from None
        n = nj.get_info_log_size(h)
        log = bytearray(n)
        if n:
            nj.get_info_log(h, log)
        size = nj.get_linked_cubin_size(h)
        cubin = bytearray(size)
        nj.get_linked_cubin(h, cubin)
    finally:
        nj.destroy(h)
    text = bytes(log).decode(errors="replace")
    info: dict[str, int] = {}
    m = _RES.search(text)
    if m:
        info.update(registers=int(m.group(1)), stack_bytes=int(m.group(2)), shared_bytes=int(m.group(3)))
    m = _SPILL.search(text)
    if m:
        info.update(spill_stores=int(m.group(1)), spill_loads=int(m.group(2)))
    return bytes(cubin), info


# --- device arrays -----------------------------------------------------------------------------

def is_device_array(x: Any) -> bool:
    """A CUDA device array (numba's, or anything with ``__cuda_array_interface__``)."""
    if isinstance(x, np.ndarray) or x is None:
        return False
    if SIMULATOR:
        return type(x).__name__ == "FakeCUDAArray"
    return hasattr(x, "__cuda_array_interface__")


def as_device_array(x: Any) -> Any:
    """A numba device array sharing ``x``'s memory (CuPy/PyTorch tensors bind without copies)."""
    if SIMULATOR:
        return x
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    if isinstance(x, DeviceNDArray):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x)
    if hasattr(x, "__dlpack__"):
        return from_dlpack(x)
    raise TypeError(f"{type(x).__name__} is not a CUDA array")


def from_dlpack(obj: Any) -> Any:
    """A device array over a DLPack producer's CUDA memory (through cuda.core's StridedMemoryView)."""
    from cuda.core.utils import StridedMemoryView
    v = StridedMemoryView(obj, stream_ptr=-1)
    if not v.is_device_accessible:
        raise TypeError("the DLPack tensor is not in CUDA memory")
    dt = np.dtype(v.dtype)
    strides = None if v.strides is None else tuple(int(s) * dt.itemsize for s in v.strides)
    desc = {"shape": tuple(v.shape), "strides": strides, "typestr": dt.str, "data": (int(v.ptr), False),
            "version": 3}
    return cuda.from_cuda_array_interface(desc, owner=obj, sync=False)


def from_pointer(ptr: int, shape: Sequence[int], dtype: np.dtype, owner: Any = None) -> Any:
    """A device array over caller-owned device memory (``IOBinding.bind_input`` with a pointer)."""
    dt = np.dtype(dtype)
    desc = {"shape": tuple(int(d) for d in shape), "strides": None, "typestr": dt.str,
            "data": (int(ptr), False), "version": 3}
    return cuda.from_cuda_array_interface(desc, owner=owner, sync=False)


def device_pointer(x: Any) -> int:
    if SIMULATOR:
        return int(x._ary.ctypes.data) if hasattr(x, "_ary") else 0
    return int(x.__cuda_array_interface__["data"][0])


def flat(x: Any) -> Any:
    """A 1-D view of a C-contiguous device array (kernels index flat memory)."""
    return x if x.ndim == 1 else x.reshape(x.size)


def upload(a: np.ndarray) -> Any:
    """A constant on the device (done once, when a plan is built)."""
    return cuda.to_device(np.ascontiguousarray(a))


def empty(shape: Sequence[int], dtype: Any, stream: Any = 0) -> Any:
    return cuda.device_array(tuple(int(d) for d in shape), np.dtype(dtype), stream=stream)


_props: dict[str, int] = {}


def max_blocks() -> int:
    """Blocks a grid-stride kernel launches at most: enough to fill every SM several times."""
    n = _props.get("blocks")
    if n is None:
        sms = None
        if not SIMULATOR:
            try:
                sms = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
            except Exception:  # noqa: BLE001
                sms = None
        n = _props["blocks"] = 4 if SIMULATOR else 32 * (sms or 132)
    return n


def grid1d(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride kernel over n elements (n > 0)."""
    return min((n + THREADS - 1) // THREADS, max_blocks()), THREADS


def row_threads(d: int) -> int:
    """Block size for one-block-per-row kernels: a power of two in [32, MAX_THREADS] covering d."""
    t = 32
    while t < d and t < MAX_THREADS:
        t *= 2
    return t


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# --- the per-run context -----------------------------------------------------------------------

ERRORS = {1: "Gather: indices element out of data bounds (an index is outside [-s, s-1] for an axis of "
             "size s)"}


class Context:
    """One stream, one arena, one error flag: everything a run of a CUDA plan touches."""

    def __init__(self) -> None:
        self.stream = cuda.stream()
        self.slots: dict[int, Any] = {}                      # slot -> uint8 device buffer
        self.views: dict[tuple[int, tuple, str], Any] = {}   # (slot, shape, dtype) -> view of that buffer
        self._scratch: dict[tuple[str, tuple, str], Any] = {}
        self._err: Any = None

    def alloc(self, slot: int | None, shape: Sequence[int], dtype: Any) -> Any:
        """A device array of ``shape``: from arena slot ``slot`` (reused across runs and between values
        whose lifetimes do not overlap), or a fresh allocation when ``slot`` is None."""
        shape = tuple(int(d) for d in shape)
        dt = np.dtype(dtype)
        if slot is None:
            return cuda.device_array(shape, dt, stream=self.stream)
        key = (slot, shape, dt.str)
        v = self.views.get(key)
        if v is not None:
            return v
        n = math.prod(shape) * dt.itemsize
        if n == 0:
            return cuda.device_array(shape, dt, stream=self.stream)
        buf = self.slots.get(slot)
        if buf is None or buf.size < n:
            cap = max(n, 2 * buf.size if buf is not None else 0)
            buf = self.slots[slot] = cuda.device_array((cap + 255) // 256 * 256, np.uint8, stream=self.stream)
            for k in [k for k in self.views if k[0] == slot]:
                del self.views[k]
        if len(self.views) > 4096:  # shapes keep changing: forget the views, keep the buffers
            self.views.clear()
        v = self.views[key] = buf[:n].view(dt).reshape(shape)
        return v

    def scratch(self, tag: str, shape: Sequence[int], dtype: Any) -> Any:
        """A buffer kernels write and nobody reads (an output the graph does not use), kept across runs."""
        key = (tag, tuple(int(d) for d in shape), np.dtype(dtype).str)
        v = self._scratch.get(key)
        if v is None:
            if len(self._scratch) > 64:
                self._scratch.clear()
            v = self._scratch[key] = cuda.device_array(key[1], np.dtype(dtype), stream=self.stream)
        return v

    def to_device(self, x: Any, slot: int | None = None) -> Any:
        """Copy a host array into the arena (a device array passes through: bound by IOBinding)."""
        if not isinstance(x, np.ndarray):
            if is_device_array(x):
                return as_device_array(x)
            x = np.asarray(x)
        d = self.alloc(slot, x.shape, x.dtype)
        if x.size:
            d.copy_to_device(np.ascontiguousarray(x), stream=self.stream)
        return d

    def to_host(self, x: Any) -> np.ndarray:
        """Copy to a new host array; waits for the stream (a CPU op reads it next)."""
        if isinstance(x, np.ndarray):
            return x
        if x.size == 0:
            return np.empty(x.shape, x.dtype)
        h = x.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return h

    def detach(self, x: Any) -> Any:
        """A device copy that no later run overwrites (outputs handed to the caller on the device)."""
        if isinstance(x, np.ndarray):
            return x
        y = cuda.device_array(x.shape, x.dtype, stream=self.stream)
        if x.size:
            y.copy_to_device(x, stream=self.stream)
        return y

    def synchronize(self) -> None:
        self.stream.synchronize()

    # Error flag: kernels store a code in err[0] where the CPU kernel would raise.
    @property
    def err(self) -> Any:
        if self._err is None:
            self._err = cuda.to_device(np.zeros(1, np.int32), stream=self.stream)
        return self._err

    def clear_errors(self) -> None:
        self.err.copy_to_device(np.zeros(1, np.int32), stream=self.stream)

    def check_errors(self) -> None:
        code = int(self.err.copy_to_host(stream=self.stream)[0])
        self.stream.synchronize()
        if code:
            self.clear_errors()
            raise InvalidArgument(ERRORS.get(code, f"CUDA kernel error code {code}"))


class ContextPool:
    """Contexts for concurrent runs of one plan: a run takes one and gives it back."""

    def __init__(self) -> None:
        self._free: list[Context] = []
        self._lock = threading.Lock()

    def acquire(self) -> Context:
        with self._lock:
            if self._free:
                return self._free.pop()
        return Context()

    def release(self, ctx: Context) -> None:
        with self._lock:
            self._free.append(ctx)
