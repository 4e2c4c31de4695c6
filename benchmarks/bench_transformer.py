"""Transformer workloads, jitort vs onnxruntime: interleaved rounds, medians, ratios (jitort / onnxruntime)
at intra-op 1 and 2 threads. Every model is built here with onnx.helper, in the forms torch's exporters
write (no downloads); tests/test_transformer_fusion.py builds its small graphs with the same builders.

    python benchmarks/bench_transformer.py [--threads 1,2] [--rounds 9] [--round-time 0.2] [--only NAME,...]
                                           [--clock wall|cpu] [--ort-spin both|on|off]

At more than one thread each case is measured twice: column ``2T`` against onnxruntime with its default
spinning intra-op threads, ``2T nospin`` with ``session.intra_op.allow_spinning=0``.

Cases: BERT-base-size and tiny encoder layers (legacy exporter: Div scale, additive mask, decomposed
LayerNorm, Erf GELU), a GPT-2 decoder block at 64 and 512 tokens (dynamo exporter: sqrt-scale Mul on Q
and K, causal mask sliced from a constant buffer and applied with Where(-inf), tanh GELU), a ViT block,
the attention block [2,128,256], LayerNorm + GELU MLP blocks (decomposed and op forms), a 3-layer MLP
x[32,784] (Gemm/Gelu/Relu/Softmax).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jitort.bench.machine import cpu_label

F32 = TensorProto.FLOAT


class Builder:
    """Nodes and initialisers of one graph; names are unique and deterministic."""

    def __init__(self, seed: int = 0, dtype: Any = np.float32) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.dtype = np.dtype(dtype)

    def name(self, hint: str) -> str:
        self.count += 1
        return f"/{hint}_{self.count}"

    def const(self, value: Any, hint: str = "c") -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def fconst(self, value: Any, hint: str = "c") -> str:
        return self.const(np.asarray(value, self.dtype), hint)

    def constant_node(self, value: Any) -> str:
        out = self.name("Constant")
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.asarray(value))))
        return out

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, domain: str = "", **attrs: Any) -> Any:
        outs = [self.name(f"{op_type}_out") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), domain=domain,
                                           **attrs))
        return outs[0] if n_out == 1 else outs

    def weight(self, shape: Sequence[int], hint: str = "w", scale: float | None = None) -> str:
        s = scale if scale is not None else 1.0 / math.sqrt(shape[0])
        return self.fconst(self.rng.standard_normal(shape) * s, hint)

    def linear(self, x: str, k: int, n: int, hint: str = "fc") -> str:
        y = self.op("MatMul", [x, self.weight([k, n], f"{hint}.weight")])
        return self.op("Add", [y, self.fconst(self.rng.standard_normal(n) * 0.02, f"{hint}.bias")])

    def dim(self, x: str, axis: int) -> str:
        """Shape -> Gather -> Unsqueeze: a 1-element int64 tensor holding one dim (exporter idiom)."""
        d = self.op("Gather", [self.op("Shape", [x]), self.constant_node(np.array(axis, np.int64))], axis=0)
        return self.op("Unsqueeze", [d, self.constant_node(np.array([0], np.int64))])

    def ln_params(self, h: int) -> tuple[str, str]:
        return (self.fconst(1 + 0.1 * self.rng.standard_normal(h), "ln.weight"),
                self.fconst(0.1 * self.rng.standard_normal(h), "ln.bias"))

    def layernorm(self, x: str, h: int, form: str = "op", eps: float = 1e-5) -> str:
        """form: 'op' (LayerNormalization), 'decomposed' (ReduceMean/Sub/Pow/Sqrt/Div, Mul, Add),
        'rms_op' (SimplifiedLayerNormalization), 'rms' (Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul, Mul)."""
        g, b = self.ln_params(h)
        if form == "op":
            return self.op("LayerNormalization", [x, g, b], axis=-1, epsilon=eps)
        if form == "rms_op":
            return self.op("SimplifiedLayerNormalization", [x, g], axis=-1, epsilon=eps)
        two, e = self.constant_node(np.array(2.0, self.dtype)), self.constant_node(np.array(eps, self.dtype))
        if form == "rms":
            ms = self.op("ReduceMean", [self.op("Pow", [x, two])], axes=[-1])
            r = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [ms, e])])])
            return self.op("Mul", [g, self.op("Mul", [x, r])])
        mean = self.op("ReduceMean", [x], axes=[-1])
        d = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Pow", [d, two])], axes=[-1])
        y = self.op("Div", [d, self.op("Sqrt", [self.op("Add", [var, e])])])
        return self.op("Add", [self.op("Mul", [y, g]), b])

    def gelu(self, x: str, form: str = "erf") -> str:
        c = self.constant_node
        if form == "op":
            return self.op("Gelu", [x])
        if form == "tanh":
            inner = self.op("Mul", [self.op("Add", [x, self.op("Mul", [self.op("Pow", [x, c(np.array(3.0, self.dtype))]),
                                                                    c(np.array(0.044715, self.dtype))])]),
                                    c(np.array(math.sqrt(2 / math.pi), self.dtype))])
            return self.op("Mul", [self.op("Mul", [x, c(np.array(0.5, self.dtype))]),
                                   self.op("Add", [self.op("Tanh", [inner]), c(np.array(1.0, self.dtype))])])
        e = self.op("Erf", [self.op("Div", [x, c(np.array(1.4142135381698608, self.dtype))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, c(np.array(1.0, self.dtype))])]),
                               c(np.array(0.5, self.dtype))])

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[str], opset: int, name: str) -> onnx.ModelProto:
        outs = [helper.make_value_info(o, onnx.TypeProto()) for o in outputs]
        g = helper.make_graph(self.nodes, name, inputs, outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="bench_transformer")
        m.ir_version = 8
        return m

    # --- attention ------------------------------------------------------------------------------
    def attention(self, x: str, hidden: int, heads: int, style: str = "legacy", mask: str | None = None,
                  kv_heads: int | None = None, head_dim: int | None = None, causal_buffer: int = 0) -> str:
        """Self-attention over x [B, S, hidden] with its Q/K/V/output projections.

        style 'legacy': K transposed by perm [0,2,3,1], Div by sqrt(d) after Q K^T, Add mask.
        style 'dynamo': Q and K^T each multiplied by d^-1/4 before the MatMul, mask after.
        mask: None, 'add' (graph input ``attention_mask`` int64 [B, S] -> (1 - m) * -10000 [B,1,1,S]),
        'bool' (the same mask as Where(m, scores, -inf)), 'causal' (a [S, S] slice of a constant
        lower-triangular buffer of ``causal_buffer`` positions applied with Where(-inf)),
        'causal_trilu' (Trilu of ones + Where(Equal 0, -inf, 0) added).
        kv_heads: K/V heads (GQA, repeated with Expand+Reshape as exporters do)."""
        hd = head_dim or hidden // heads
        kvh = kv_heads or heads
        c = self.constant_node
        bsz, seq = self.dim(x, 0), self.dim(x, 1)

        def split(t: str, n: int, perm: list[int]) -> str:
            shape = self.op("Concat", [bsz, seq, c(np.array([n, hd], np.int64))], axis=0)
            return self.op("Transpose", [self.op("Reshape", [t, shape])], perm=perm)

        q = split(self.linear(x, hidden, heads * hd, "q_proj"), heads, [0, 2, 1, 3])
        kperm = [0, 2, 3, 1] if style == "legacy" else [0, 2, 1, 3]
        k = split(self.linear(x, hidden, kvh * hd, "k_proj"), kvh, kperm)
        v = split(self.linear(x, hidden, kvh * hd, "v_proj"), kvh, [0, 2, 1, 3])
        if kvh != heads:  # repeat_kv: [B, kvh, 1, S, d] expanded to [B, kvh, rep, S, d] -> [B, heads, S, d]
            rep = heads // kvh

            def repeat(t: str, last2: list[str]) -> str:
                u = self.op("Unsqueeze", [t, c(np.array([2], np.int64))])
                shp = self.op("Concat", [bsz, c(np.array([kvh, rep], np.int64)), *last2], axis=0)
                e = self.op("Expand", [u, shp])
                return self.op("Reshape", [e, self.op("Concat", [bsz, c(np.array([heads], np.int64)), *last2], axis=0)])
            dcol = c(np.array([hd], np.int64))
            k = repeat(k, [dcol, seq] if style == "legacy" else [seq, dcol])
            v = repeat(v, [seq, dcol])
        if style == "legacy":
            s = self.op("Div", [self.op("MatMul", [q, k]), c(np.array(math.sqrt(hd), self.dtype))])
        else:
            f = c(np.array(1 / math.sqrt(math.sqrt(hd)), self.dtype))
            kt = self.op("Transpose", [k], perm=[0, 1, 3, 2])
            s = self.op("MatMul", [self.op("Mul", [q, f]), self.op("Mul", [kt, f])])
        ninf = c(np.array(-np.inf, self.dtype))
        if mask == "add":
            m = self.op("Unsqueeze", ["attention_mask", c(np.array([1, 2], np.int64))])
            m = self.op("Sub", [c(np.array(1.0, self.dtype)), self.op("Cast", [m], to=helper.np_dtype_to_tensor_dtype(self.dtype))])
            s = self.op("Add", [s, self.op("Mul", [m, c(np.array(-10000.0, self.dtype))])])
        elif mask == "bool":
            m = self.op("Cast", [self.op("Unsqueeze", ["attention_mask", c(np.array([1, 2], np.int64))])],
                        to=TensorProto.BOOL)
            s = self.op("Where", [m, s, ninf])
        elif mask == "causal":
            buf = self.const(np.tril(np.ones((causal_buffer, causal_buffer), bool))[None, None], "attn.bias")
            zero = c(np.array([0], np.int64))
            cm = self.op("Slice", [buf, self.op("Concat", [zero, zero], axis=0), self.op("Concat", [seq, seq], axis=0),
                                   c(np.array([2, 3], np.int64))])
            s = self.op("Where", [cm, s, ninf])
        elif mask == "causal_trilu":
            ones = self.op("ConstantOfShape", [self.op("Concat", [seq, seq], axis=0)],
                           value=numpy_helper.from_array(np.array([1.0], self.dtype)))
            tri = self.op("Trilu", [ones], upper=0)
            add = self.op("Where", [self.op("Equal", [tri, c(np.array(0.0, self.dtype))]), ninf,
                                    c(np.array(0.0, self.dtype))])
            s = self.op("Add", [s, add])
        p = self.op("Softmax", [s], axis=-1)
        o = self.op("Transpose", [self.op("MatMul", [p, v])], perm=[0, 2, 1, 3])
        o = self.op("Reshape", [o, self.op("Concat", [bsz, seq, c(np.array([heads * hd], np.int64))], axis=0)])
        return self.linear(o, heads * hd, hidden, "o_proj")


def _x(name: str = "x", hidden: int | str = "hidden", dtype: Any = F32) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, ["batch", "sequence", hidden])


def _mask_input() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])


def encoder_layer(hidden: int = 128, heads: int = 4, ffn: int = 512, style: str = "legacy", mask: str | None = "add",
                  ln: str = "decomposed", gelu: str = "erf", dtype: Any = np.float32, seed: int = 0,
                  opset: int = 17) -> onnx.ModelProto:
    """A BERT layer (post-norm): attention + residual + LayerNorm, FFN + residual + LayerNorm."""
    b = Builder(seed, dtype)
    a = b.op("Add", [b.attention("x", hidden, heads, style, mask), "x"])
    a = b.layernorm(a, hidden, ln, 1e-12)
    h = b.linear(b.gelu(b.linear(a, hidden, ffn, "ffn1"), gelu), ffn, hidden, "ffn2")
    out = b.layernorm(b.op("Add", [h, a]), hidden, ln, 1e-12)
    ins = [_x("x", hidden, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))] + ([_mask_input()] if mask in ("add", "bool") else [])
    return b.model(ins, [out], opset, "encoder_layer")


def decoder_block(hidden: int = 128, heads: int = 4, style: str = "dynamo", mask: str = "causal", ln: str = "op",
                  gelu: str = "tanh", kv_heads: int | None = None, positions: int = 1024, seed: int = 0,
                  opset: int = 18) -> onnx.ModelProto:
    """A GPT-2 block (pre-norm): x + attn(ln1(x)), then + mlp(ln2(.)) with a 4x hidden MLP."""
    b = Builder(seed)
    x2 = b.op("Add", ["x", b.attention(b.layernorm("x", hidden, ln), hidden, heads, style, mask, kv_heads,
                                       causal_buffer=positions)])
    f = b.linear(b.gelu(b.linear(b.layernorm(x2, hidden, ln), hidden, 4 * hidden, "c_fc"), gelu), 4 * hidden, hidden,
                 "c_proj")
    out = b.op("Add", [x2, f])
    return b.model([_x("x", hidden)], [out], opset, "decoder_block")


def vit_block(hidden: int = 192, heads: int = 3, mlp: int = 768, seed: int = 0) -> onnx.ModelProto:
    """A ViT encoder block (pre-norm, no mask, Gelu op, dynamo exporter, opset 20)."""
    b = Builder(seed)
    x2 = b.op("Add", ["x", b.attention(b.layernorm("x", hidden, "op", 1e-6), hidden, heads, "dynamo", None)])
    f = b.linear(b.gelu(b.linear(b.layernorm(x2, hidden, "op", 1e-6), hidden, mlp, "fc1"), "op"), mlp, hidden, "fc2")
    return b.model([_x("x", hidden)], [b.op("Add", [x2, f])], 20, "vit_block")


def attention_block(hidden: int = 256, heads: int = 4, style: str = "legacy", seed: int = 0) -> onnx.ModelProto:
    b = Builder(seed)
    return b.model([_x("x", hidden)], [b.attention("x", hidden, heads, style, None)], 17, "attention_block")


def attention_op(hidden: int = 256, heads: int = 4, causal: int = 1) -> onnx.ModelProto:
    """The ONNX Attention op (opset 23) on 3-D q, k, v [batch, seq, hidden] (torch's dynamo exporter
    emits it for scaled_dot_product_attention at opset 23)."""
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=causal, q_num_heads=heads,
                            kv_num_heads=heads)
    g = helper.make_graph([node], "attention_op", [_x(n, hidden) for n in "qkv"],
                          [helper.make_tensor_value_info("y", F32, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    m.ir_version = 10
    return m


def ln_gelu_block(hidden: int = 256, ffn: int = 1024, form: str = "decomposed", seed: int = 0) -> onnx.ModelProto:
    """LayerNorm then a GELU MLP with a residual: decomposed (ReduceMean..., Erf GELU) or op forms
    (LayerNormalization, Gelu opset 20)."""
    b = Builder(seed)
    ln = b.layernorm("x", hidden, "op" if form == "op" else "decomposed")
    h = b.linear(b.gelu(b.linear(ln, hidden, ffn, "fc1"), "op" if form == "op" else "erf"), ffn, hidden, "fc2")
    return b.model([_x("x", hidden)], [b.op("Add", ["x", h])], 20 if form == "op" else 17, "ln_gelu_block")


def mlp3(seed: int = 0) -> onnx.ModelProto:
    b = Builder(seed)
    h = b.op("Gelu", [b.op("Gemm", ["x", b.weight([784, 512]), b.fconst(np.zeros(512))], transB=0)])
    h = b.op("Relu", [b.op("Gemm", [h, b.weight([512, 256]), b.fconst(np.zeros(256))])])
    y = b.op("Softmax", [b.op("Gemm", [h, b.weight([256, 10]), b.fconst(np.zeros(10))])], axis=-1)
    return b.model([helper.make_tensor_value_info("x", F32, ["batch", 784])], [y], 20, "mlp3")


def feeds_for(model: onnx.ModelProto, batch: int, seq: int, seed: int = 0, pad: int = 0) -> dict[str, np.ndarray]:
    """Inputs for ``model``: normal floats [batch, seq, hidden] (or [batch, 784]); an int64
    attention mask of ones with the last ``pad`` positions of batch 0 zero."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in model.graph.input:
        tt = i.type.tensor_type
        if tt.elem_type == TensorProto.INT64:
            m = np.ones((batch, seq), np.int64)
            if pad:
                m[0, seq - pad:] = 0
            out[i.name] = m
            continue
        dims = [d.dim_value for d in tt.shape.dim]
        shape = (batch, dims[1]) if len(dims) == 2 else (batch, seq, dims[2])
        out[i.name] = rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    return out


CASES: dict[str, tuple[Callable[[], onnx.ModelProto], int, int]] = {
    # name: (builder, batch, sequence)
    "bert_tiny_layer h128 2x128": (lambda: encoder_layer(128, 4, 512), 2, 128),
    "bert_base_layer h768 1x128": (lambda: encoder_layer(768, 12, 3072), 1, 128),
    "gpt2_block h128 64 tok": (lambda: decoder_block(128, 4), 1, 64),
    "gpt2_block h128 512 tok": (lambda: decoder_block(128, 4), 1, 512),
    "vit_block h192 197 tok": (lambda: vit_block(), 1, 197),
    "attention_block [2,128,256]": (lambda: attention_block(), 2, 128),
    "Attention op23 causal [2,128,256]": (lambda: attention_op(), 2, 128),
    "ln_gelu decomposed [2,128,256]": (lambda: ln_gelu_block(form="decomposed"), 2, 128),
    "ln_gelu op [2,128,256]": (lambda: ln_gelu_block(form="op"), 2, 128),
    "mlp3 x[32,784]": (mlp3, 32, 0),
}


def _sessions(model: onnx.ModelProto, threads: int, spinning: bool = True) -> tuple[Any, Any]:
    import onnxruntime

    import jitort
    from jitort.bench.harness import ort_session_options
    so = ort_session_options(threads, spinning)
    ref = onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    jso = jitort.SessionOptions()
    jso.intra_op_num_threads = threads
    return jitort.InferenceSession(model.SerializeToString(), jso), ref


CLOCK: Callable[[], float] = time.perf_counter


def _timed(run: Callable[[], Any], seconds: float) -> float:
    """Mean seconds per call over at least ``seconds`` of CLOCK (and 3 calls)."""
    n, t0 = 0, CLOCK()
    while True:
        run()
        n += 1
        t = CLOCK() - t0
        if t >= seconds and n >= 3:
            return t / n


def measure(name: str, threads: int, rounds: int, round_time: float,
            spinning: bool = True) -> tuple[float, float, float]:
    """(jitort s, onnxruntime s, max abs difference) medians of interleaved rounds; ``spinning``:
    onnxruntime's intra-op threads spin after each run (its default) or not."""
    build, batch, seq = CASES[name]
    model = build()
    feeds = feeds_for(model, batch, seq, pad=2 if seq else 0)
    js, rs = _sessions(model, threads, spinning)
    a, r = js.run(None, feeds), rs.run(None, feeds)
    diff = max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, r))
    tj, tr = [], []
    for _ in range(2):
        _timed(lambda: js.run(None, feeds), round_time / 2)
        _timed(lambda: rs.run(None, feeds), round_time / 2)
    for _ in range(rounds):
        tj.append(_timed(lambda: js.run(None, feeds), round_time))
        tr.append(_timed(lambda: rs.run(None, feeds), round_time))
    return statistics.median(tj), statistics.median(tr), diff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--round-time", type=float, default=0.2)
    ap.add_argument("--only", default="", help="comma-separated substrings of case names")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (steadier on a loaded machine, "
                         "fair at 1 thread only: it adds up all threads' time, spinning included)")
    ap.add_argument("--ort-spin", choices=("both", "on", "off"), default="both",
                    help="onnxruntime's intra-op spinning in multi-thread columns: both (two columns), on (its "
                         "default), off (session.intra_op.allow_spinning=0)")
    args = ap.parse_args()
    from jitort.bench.harness import ort_spin_modes, spin_label
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    names = [n for n in CASES if not args.only or any(s in n for s in args.only.split(","))]
    cols = [(int(t), spin) for t in args.threads.split(",") for spin in ort_spin_modes(int(t), args.ort_spin)]
    labels = [spin_label(t, spin) for t, spin in cols]
    print(f"CPU: {cpu_label()}; clock: {args.clock}; load before: {os.getloadavg()[0]:.2f}; "
          f"'nospin': onnxruntime with session.intra_op.allow_spinning=0")
    print(f"{'case':34s} " + " ".join(f"{c + ' jit ms':>15s} {'ort ms':>8s} {'ratio':>6s}" for c in labels)
          + "  max|diff|")
    ratios: dict[str, list[float]] = {c: [] for c in labels}
    for name in names:
        cells, diff = [], 0.0
        for (t, spin), col in zip(cols, labels):
            tj, tr, d = measure(name, t, args.rounds, args.round_time, spin)
            diff = max(diff, d)
            ratios[col].append(tj / tr)
            cells.append(f"{tj * 1e3:15.3f} {tr * 1e3:8.3f} {tj / tr:6.2f}")
        print(f"{name:34s} " + " ".join(cells) + f"  {diff:.1e}", flush=True)
    print("geomean ratio: " + ", ".join(f"{t} {math.exp(statistics.mean(map(math.log, r))):.2f}x"
                                         for t, r in ratios.items() if r))
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
