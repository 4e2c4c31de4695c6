"""The CUDA provider's data-movement registrations (Transpose, Concat, Split, Slice, Expand, Gather,
the views Reshape/Flatten/Squeeze/Unsqueeze/Identity, and Shape/Size): checks, and lowerings to the
launchers of ``kernels/cuda/movement.py``. ``MOVEMENT_TABLE`` joins the op table in
``kernels/cuda/ops.py``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.cuda.call import (MAX_RANK, CudaCall, HostRef, dtype_key, dtype_of, first_reason, move_key,
                                      present, rank_at_most, rank_of, tensor_types)
from jitort.kernels.registry import Ref, lower_node


def _check_moves(node: Node, g: Graph) -> str | None:
    return first_reason(lambda: tensor_types(node, g), lambda: rank_at_most(node, g, 0))


def _lower_transpose(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    perm = node.attrs.get("perm")
    kw = {"perm": None if perm is None else tuple(int(p) for p in perm)}
    return CudaCall(movement.transpose, [Ref(node.inputs[0])], kw,
                    [(movement.gather_strided, move_key(g, node.inputs[0]))])


def _check_concat(node: Node, g: Graph) -> str | None:
    return first_reason(lambda: tensor_types(node, g), lambda: rank_at_most(node, g, 0),
                        lambda: None if len({dtype_of(g, i) for i in node.inputs if i}) == 1 else "input dtypes differ")


def _lower_concat(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    return CudaCall(movement.concat, [Ref(i) for i in node.inputs if i], {"axis": int(node.attrs.get("axis", 1))},
                    [(movement.scatter_strided, move_key(g, node.inputs[0]))])


def _split_call(node: Node, g: Graph, sizes: Any) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    a = node.attrs
    split_in = HostRef(node.inputs[1]) if present(node, 1) else None
    kw = {"axis": int(a.get("axis", 0)), "sizes": None if not sizes else tuple(int(v) for v in sizes),
          "num_outputs": a.get("num_outputs"), "nout": len(node.outputs)}
    return CudaCall(movement.split, [Ref(node.inputs[0]), split_in], kw,
                    [(movement.gather_strided, move_key(g, node.inputs[0]))])


def _lower_split_1(node: Node, g: Graph) -> CudaCall:
    return _split_call(node, g, node.attrs.get("split"))  # opsets 1-12: the 'split' attribute


def _lower_split(node: Node, g: Graph) -> CudaCall:
    return _split_call(node, g, None)  # opset 13 on: sizes come from the 'split' input


def _lower_slice_1(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    key = [(movement.gather_strided, move_key(g, node.inputs[0]))]
    a = node.attrs
    kw = {"attr_starts": tuple(a["starts"]), "attr_ends": tuple(a["ends"]),
          "attr_axes": None if a.get("axes") is None else tuple(a["axes"])}
    return CudaCall(movement.slice_, [Ref(node.inputs[0])], kw, key)


def _lower_slice(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    key = [(movement.gather_strided, move_key(g, node.inputs[0]))]
    args: list[Any] = [Ref(node.inputs[0])] + [HostRef(node.inputs[k]) if present(node, k) else None
                                                 for k in range(1, 5)]
    return CudaCall(movement.slice_, args, {}, key)


def _check_expand(node: Node, g: Graph) -> str | None:
    return first_reason(lambda: tensor_types(node, g), lambda: rank_at_most(node, g, 0),
                        lambda: None if (g.type_of(node.outputs[0]).rank or 99) <= MAX_RANK else "output rank > 6")


def _lower_expand(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    return CudaCall(movement.expand, [Ref(node.inputs[0]), HostRef(node.inputs[1])], {},
                    [(movement.gather_strided, move_key(g, node.inputs[0]))])


def _check_gather(node: Node, g: Graph) -> str | None:
    def idx() -> str | None:
        if dtype_of(g, node.inputs[1]) not in (np.dtype(np.int32), np.dtype(np.int64)):
            return "indices must be int32/int64"
        return None if rank_of(g, node.inputs[0]) is not None else "rank unknown at compile time"
    return first_reason(lambda: tensor_types(node, g), idx)


def _lower_gather(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    key = f"{move_key(g, node.inputs[0])},{dtype_key(g, node.inputs[1])}"
    return CudaCall(movement.gather, [Ref(node.inputs[0]), Ref(node.inputs[1])],
                    {"axis": int(node.attrs.get("axis", 0))}, [(movement.gather_axis, key)])


def _check_view(node: Node, g: Graph) -> str | None:
    return tensor_types(node, g)


def _lower_view(node: Node, g: Graph) -> CudaCall:
    """The CPU op's lowering computes the output shape (on a dummy); the device array is reshaped."""
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    call = lower_node(node, g)
    if not call.args or call.args[0] != Ref(node.inputs[0]):
        raise OrtNotImplemented(f"{node.describe()}: unexpected CPU lowering for a CUDA view")
    rest = [HostRef(a.name) if isinstance(a, Ref) else a for a in call.args[1:]]
    return CudaCall(movement.view, [Ref(node.inputs[0]), *rest], {"fn": call.fn, "kwargs": dict(call.kwargs)})


def _lower_shape(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    if node.op_type == "Size":
        return CudaCall(movement.size_of, [HostRef(node.inputs[0])])
    kw = {"start": int(node.attrs.get("start", 0)), "end": node.attrs.get("end")}
    return CudaCall(movement.shape_of, [HostRef(node.inputs[0])], kw)


def _ok(node: Node, g: Graph) -> str | None:
    return None


# (op, since, check, lower, view), as ops.py's table
MOVEMENT_TABLE: list[tuple[str, int, Callable[[Node, Graph], str | None], Callable[[Node, Graph], CudaCall], bool]] = [
    ("Transpose", 1, _check_moves, _lower_transpose, False),
    ("Concat", 1, _check_concat, _lower_concat, False),
    ("Split", 1, _check_moves, _lower_split_1, False),
    ("Split", 2, _check_moves, _lower_split_1, False),
    ("Split", 13, _check_moves, _lower_split, False),
    ("Slice", 1, _check_moves, _lower_slice_1, False),
    ("Slice", 10, _check_moves, _lower_slice, False),
    ("Expand", 8, _check_expand, _lower_expand, False),
    ("Gather", 1, _check_gather, _lower_gather, False),
    ("Reshape", 1, _check_view, _lower_view, True),
    ("Reshape", 5, _check_view, _lower_view, True),
    ("Flatten", 1, _check_view, _lower_view, True),
    ("Squeeze", 1, _check_view, _lower_view, True),
    ("Squeeze", 13, _check_view, _lower_view, True),
    ("Unsqueeze", 1, _check_view, _lower_view, True),
    ("Unsqueeze", 13, _check_view, _lower_view, True),
    ("Identity", 1, _check_view, _lower_view, True),
    ("Shape", 1, _ok, _lower_shape, False),
    ("Size", 1, _ok, _lower_shape, False),
]
