"""Synthetic models built with onnx.helper, the way exporters emit them (for tests and `jitort bench`).

Every builder is deterministic (seeded weights) and returns a ModelProto with symbolic batch and
sequence dims where the real exporters use them.

* ``elementwise_chain`` — N elementwise ops over four broadcast shapes.
* ``mlp`` — MatMul/Add/Relu layers.
* ``bert_layer`` — a BERT encoder layer as torch's legacy exporter (opset 14–17) writes it: shape
  chains (Shape/Gather/Unsqueeze/Concat -> Reshape), an extended attention mask, Erf-based GELU,
  one decomposed LayerNorm (ReduceMean/Sub/Pow/Sqrt/Div) and one LayerNormalization op.
* ``bert_encoder`` — token-level BERT: int64 ``input_ids``, ``token_type_ids`` and ``attention_mask``
  (batch x sequence), word/position/token-type embeddings summed and layer-normed, then ``bert_layer``.
* ``gpt_block`` — a GPT-2 style decoder block as the dynamo exporter (opset 18) writes it: a fused
  QKV projection split in three, a causal mask sliced from a constant buffer with run-time ends,
  Where(-inf) masking, tanh-GELU decomposed into Pow/Mul/Tanh.
* ``conv_block`` — a ResNet basic block, NCHW: Conv 3x3 -> BatchNormalization -> Relu -> Conv 3x3 ->
  BatchNormalization, plus the block's input (residual Add), then Relu.
* ``resnet`` — a small ResNet with bottleneck blocks (stem Conv + MaxPool, 1x1/3x3/1x1 convs with
  biases, projections, residual Adds, GlobalAveragePool), the float model onnxruntime's quantiser
  is given in tests and ``benchmarks/bench_quant.py``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"/{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def weight(self, shape: Sequence[int], hint: str = "w", scale: float | None = None) -> str:
        s = scale if scale is not None else 1.0 / math.sqrt(shape[0])
        return self.const((self.rng.standard_normal(shape) * s).astype(np.float32), hint)

    def constant_node(self, value: np.ndarray) -> str:
        """A Constant node, as exporters emit for small shape values."""
        out = self.name("Constant")
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.asarray(value))))
        return out

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: object) -> str | list[str]:
        outs = [self.name(f"{op_type}_out") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], opset: int,
              name: str) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="jitort.zoo")
        m.ir_version = 8
        return m

    # --- exporter idioms ----------------------------------------------------------------------
    def dim(self, x: str, axis: int) -> str:
        """Shape(x) -> Gather(axis) -> Unsqueeze: a 1-element int64 tensor holding one dim."""
        shape = self.op("Shape", [x])
        d = self.op("Gather", [shape, self.constant_node(np.array(axis, np.int64))], axis=0)
        return self.op("Unsqueeze", [d, self.constant_node(np.array([0], np.int64))])

    def linear(self, x: str, k: int, n: int, hint: str) -> str:
        y = self.op("MatMul", [x, self.weight([k, n], f"{hint}.weight")])
        return self.op("Add", [self.const((self.rng.standard_normal(n) * 0.02).astype(np.float32), f"{hint}.bias"), y])

    def layernorm_decomposed(self, x: str, h: int, eps: float = 1e-12) -> str:
        mean = self.op("ReduceMean", [x], axes=[-1])
        d = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Pow", [d, self.constant_node(np.array(2.0, np.float32))])], axes=[-1])
        std = self.op("Sqrt", [self.op("Add", [var, self.constant_node(np.array(eps, np.float32))])])
        y = self.op("Div", [d, std])
        y = self.op("Mul", [y, self.const(1 + 0.1 * self.rng.standard_normal(h).astype(np.float32), "ln.weight")])
        return self.op("Add", [y, self.const(0.1 * self.rng.standard_normal(h).astype(np.float32), "ln.bias")])

    def layernorm(self, x: str, h: int, eps: float = 1e-5) -> str:
        return self.op("LayerNormalization", [x, self.const(1 + 0.1 * self.rng.standard_normal(h).astype(np.float32)),
                                              self.const(0.1 * self.rng.standard_normal(h).astype(np.float32))],
                       axis=-1, epsilon=eps)


def elementwise_chain(n_ops: int = 20, shape: Sequence[int | str] = ("N", 3, 8, 16), seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    last = int(shape[-1])
    bs = [b.const(b.rng.standard_normal(s).astype(np.float32), f"b{k}") for k, s in
          enumerate([(last,), (int(shape[-2]), 1), (int(shape[-3]), 1, last), (last,)])]
    cycle = [("Add", 0), ("Mul", 1), ("Relu", None), ("Sub", 2), ("Tanh", None), ("Mul", 0), ("Add", 1),
             ("Sigmoid", None), ("Div", 3), ("Exp", None), ("Neg", None), ("Add", 2), ("Abs", None),
             ("Sqrt", None), ("Mul", 2), ("Erf", None), ("Add", 0), ("Max", 1), ("Clip", None), ("Sub", 3)]
    x = cur = "x"
    for k in range(n_ops):
        op, other = cycle[k % len(cycle)]
        if op == "Div":
            cur = b.op(op, [cur, b.op("Add", [b.op("Abs", [bs[other]]), b.const(np.array(1.0, np.float32))])])
        else:
            cur = b.op(op, [cur] + ([bs[other]] if other is not None else []))
    return b.model([helper.make_tensor_value_info(x, TensorProto.FLOAT, list(shape))],
                   [helper.make_tensor_value_info(cur, TensorProto.FLOAT, list(shape))], 17, "elementwise_chain")


def mlp(batch: int | str = "N", sizes: Sequence[int] = (256, 512, 512, 10), seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    cur = "x"
    for k in range(len(sizes) - 1):
        cur = b.linear(cur, sizes[k], sizes[k + 1], f"fc{k}")
        if k < len(sizes) - 2:
            cur = b.op("Relu", [cur])
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                   [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [batch, sizes[-1]])], 17, "mlp")


def bert_layer(hidden: int = 64, heads: int = 4, ffn: int = 256, seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    b = _Builder(seed)
    hd = hidden // heads
    x, mask = "hidden_states", "attention_mask"
    # extended attention mask: (1 - mask[:, None, None, :]) * -10000
    m = b.op("Unsqueeze", [mask, b.constant_node(np.array([1, 2], np.int64))])
    m = b.op("Cast", [m], to=TensorProto.FLOAT)
    m = b.op("Sub", [b.constant_node(np.array(1.0, np.float32)), m])
    ext = b.op("Mul", [m, b.constant_node(np.array(-10000.0, np.float32))])
    bsz, seq = b.dim(x, 0), b.dim(x, 1)
    heads_shape = b.op("Concat", [bsz, seq, b.constant_node(np.array([heads], np.int64)),
                                  b.constant_node(np.array([hd], np.int64))], axis=0)

    def split_heads(t: str, perm: list[int]) -> str:
        return b.op("Transpose", [b.op("Reshape", [t, heads_shape])], perm=perm)

    q = split_heads(b.linear(x, hidden, hidden, "query"), [0, 2, 1, 3])
    k = split_heads(b.linear(x, hidden, hidden, "key"), [0, 2, 3, 1])
    v = split_heads(b.linear(x, hidden, hidden, "value"), [0, 2, 1, 3])
    scores = b.op("Div", [b.op("MatMul", [q, k]), b.constant_node(np.array(math.sqrt(hd), np.float32))])
    probs = b.op("Softmax", [b.op("Add", [scores, ext])], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    out_shape = b.op("Concat", [bsz, seq, b.constant_node(np.array([hidden], np.int64))], axis=0)
    ctx = b.op("Reshape", [ctx, out_shape])
    attn = b.op("Add", [b.linear(ctx, hidden, hidden, "attention.output.dense"), x])
    attn = b.layernorm_decomposed(attn, hidden)
    h = b.linear(attn, hidden, ffn, "intermediate.dense")
    gelu = b.op("Mul", [b.op("Mul", [h, b.op("Add", [b.op("Erf", [b.op("Div", [
        h, b.constant_node(np.array(1.4142135381698608, np.float32))])]), b.constant_node(np.array(1.0, np.float32))])]),
        b.constant_node(np.array(0.5, np.float32))])
    out = b.op("Add", [b.linear(gelu, ffn, hidden, "output.dense"), attn])
    out = b.layernorm(out, hidden)
    return b.model([helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "sequence", hidden]),
                    helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "sequence"])],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "sequence", hidden])],
                   opset, "bert_layer")


def token_ids(name: str) -> onnx.ValueInfoProto:
    """An int64 ``batch x sequence`` graph input (token ids, positions, segment ids)."""
    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])


def prepend(model: onnx.ModelProto, replaced: str, inputs: list[onnx.ValueInfoProto], b: _Builder,
            last: str) -> onnx.ModelProto:
    """``model`` with its graph input ``replaced`` computed from ``inputs`` by ``b``'s nodes (ending in ``last``)."""
    g = model.graph
    kept = [v for v in g.input if v.name != replaced]
    del g.input[:]
    g.input.extend(inputs + kept)
    nodes = [*b.nodes, helper.make_node("Identity", [last], [replaced])] + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(b.inits)
    onnx.checker.check_model(model)
    return model


def bert_encoder(vocab: int = 30, positions: int = 32, hidden: int = 32, heads: int = 2, ffn: int = 64,
                 seed: int = 0) -> onnx.ModelProto:
    """Token-type vocab 2, positions from Range over the sequence length (at most ``positions``),
    word/position/type embeddings summed and layer-normed, then ``bert_layer`` (attention + FFN, two
    LayerNorms). Inputs: ``input_ids``, ``token_type_ids``, ``attention_mask``, all int64
    ``batch x sequence``. The defaults are a tiny model for tests."""
    b = _Builder(seed)
    b.count = 10_000  # node and tensor names apart from the layer's
    words = b.op("Gather", [b.weight([vocab, hidden], "word_embeddings", 0.5), "input_ids"], axis=0)
    seq = b.op("Gather", [b.op("Shape", ["input_ids"]), b.constant_node(np.array(1, np.int64))], axis=0)
    pos = b.op("Range", [b.constant_node(np.array(0, np.int64)), seq, b.constant_node(np.array(1, np.int64))])
    pos = b.op("Gather", [b.weight([positions, hidden], "position_embeddings", 0.5),
                          b.op("Unsqueeze", [pos, b.constant_node(np.array([0], np.int64))])], axis=0)
    types = b.op("Gather", [b.weight([2, hidden], "token_type_embeddings", 0.5), "token_type_ids"], axis=0)
    emb = b.layernorm(b.op("Add", [b.op("Add", [words, pos]), types]), hidden, eps=1e-12)
    return prepend(bert_layer(hidden=hidden, heads=heads, ffn=ffn, seed=seed), "hidden_states",
                   [token_ids("input_ids"), token_ids("token_type_ids")], b, emb)


def gpt_block(hidden: int = 64, heads: int = 4, max_positions: int = 128, seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    hd = hidden // heads
    x = "input_embeds"
    h = b.layernorm(x, hidden)
    qkv = b.linear(h, hidden, 3 * hidden, "c_attn")
    q, k, v = b.op("Split", [qkv], n_out=3, axis=2, num_outputs=3)
    bsz, seq = b.dim(x, 0), b.dim(x, 1)
    shape4 = b.op("Concat", [bsz, seq, b.constant_node(np.array([heads, hd], np.int64))], axis=0)
    q = b.op("Transpose", [b.op("Reshape", [q, shape4])], perm=[0, 2, 1, 3])
    k = b.op("Transpose", [b.op("Reshape", [k, shape4])], perm=[0, 2, 3, 1])
    v = b.op("Transpose", [b.op("Reshape", [v, shape4])], perm=[0, 2, 1, 3])
    w = b.op("Mul", [b.op("MatMul", [q, k]), b.constant_node(np.array(1 / math.sqrt(hd), np.float32))])
    # causal mask: bias[:, :, :S, :S] sliced from a constant lower-triangular buffer
    bias = b.const(np.tril(np.ones((max_positions, max_positions), bool))[None, None], "attn.bias")
    zero = b.constant_node(np.array([0], np.int64))
    causal = b.op("Slice", [bias, b.op("Concat", [zero, zero], axis=0), b.op("Concat", [seq, seq], axis=0),
                            b.constant_node(np.array([2, 3], np.int64))])
    w = b.op("Where", [causal, w, b.constant_node(np.array(-np.inf, np.float32))])
    p = b.op("Softmax", [w], axis=-1)
    a = b.op("Reshape", [b.op("Transpose", [b.op("MatMul", [p, v])], perm=[0, 2, 1, 3]),
                         b.op("Concat", [bsz, seq, b.constant_node(np.array([hidden], np.int64))], axis=0)])
    x2 = b.op("Add", [x, b.linear(a, hidden, hidden, "attn.c_proj")])
    f = b.linear(b.layernorm(x2, hidden), hidden, 4 * hidden, "mlp.c_fc")
    inner = b.op("Mul", [b.op("Add", [f, b.op("Mul", [b.op("Pow", [f, b.constant_node(np.array(3.0, np.float32))]),
                                                     b.constant_node(np.array(0.044715, np.float32))])]),
                         b.constant_node(np.array(math.sqrt(2 / math.pi), np.float32))])
    g = b.op("Mul", [b.op("Mul", [f, b.constant_node(np.array(0.5, np.float32))]),
                     b.op("Add", [b.op("Tanh", [inner]), b.constant_node(np.array(1.0, np.float32))])])
    out = b.op("Add", [x2, b.linear(g, 4 * hidden, hidden, "mlp.c_proj")])
    return b.model([helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "sequence", hidden])],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "sequence", hidden])],
                   18, "gpt_block")


def conv_block(channels: int = 64, size: int = 56, batch: int | str = "N", seed: int = 0,
               opset: int = 17) -> onnx.ModelProto:
    b = _Builder(seed)

    def conv_bn(x: str, k: int) -> str:
        w = b.weight([channels, channels, 3, 3], f"layer.conv{k}.weight", scale=1.0 / math.sqrt(9 * channels))
        y = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
        c = channels
        stats = [b.const((1 + 0.1 * b.rng.standard_normal(c)).astype(np.float32), f"layer.bn{k}.weight"),
                 b.const((0.1 * b.rng.standard_normal(c)).astype(np.float32), f"layer.bn{k}.bias"),
                 b.const((0.1 * b.rng.standard_normal(c)).astype(np.float32), f"layer.bn{k}.running_mean"),
                 b.const((1 + 0.1 * np.abs(b.rng.standard_normal(c))).astype(np.float32), f"layer.bn{k}.running_var")]
        return b.op("BatchNormalization", [y, *stats], epsilon=1e-5)

    x = "x"
    h = b.op("Relu", [conv_bn(x, 1)])
    out = b.op("Relu", [b.op("Add", [conv_bn(h, 2), x])])
    shape = [batch, channels, size, size]
    return b.model([helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], opset, "conv_block")


def resnet(size: int = 224, stem: int = 64, stages: Sequence[tuple[int, int, int, int]] = (
        (64, 256, 2, 1), (128, 512, 2, 2), (256, 1024, 2, 2)), stem_kernel: int = 7, seed: int = 0,
        opset: int = 13) -> onnx.ModelProto:
    """Input x [1, 3, size, size]: a stride-2 stem Conv + Relu, MaxPool 3x3 stride 2, then per stage
    (mid channels, out channels, blocks, stride) bottleneck blocks (1x1, 3x3 with the stride, 1x1;
    the first with a 1x1 projection), each Conv with a bias and Relu except before the residual Add,
    Relu after it; GlobalAveragePool. He-initialised, seeded."""
    b = _Builder(seed)

    def conv(x: str, cin: int, cout: int, k: int, s: int = 1, relu: bool = True) -> str:
        w = b.weight([cout, cin, k, k], "conv.weight", scale=math.sqrt(2 / (cin * k * k)))
        bias = b.const((b.rng.standard_normal(cout) * 0.01).astype(np.float32), "conv.bias")
        y = b.op("Conv", [x, w, bias], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        return b.op("Relu", [y]) if relu else y

    x = b.op("MaxPool", [conv("x", 3, stem, stem_kernel, 2)], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    c = stem
    for mid, out, blocks, stride in stages:
        for i in range(blocks):
            s = stride if i == 0 else 1
            y = conv(conv(conv(x, c, mid, 1), mid, mid, 3, s), mid, out, 1, relu=False)
            skip = conv(x, c, out, 1, s, relu=False) if i == 0 else x
            x, c = b.op("Relu", [b.op("Add", [y, skip])]), out
    y = b.op("GlobalAveragePool", [x])
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], opset, "resnet")
