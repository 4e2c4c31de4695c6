"""KV-cache decoding of a Llama-style decoder built as onnxruntime-genai's model builder writes one
(token embedding Gather; SimplifiedLayerNormalization, then SkipSimplifiedLayerNormalization between
blocks; q/k/v/o, gate/up/down projections as MatMul or int4 MatMulNBits; GroupQueryAttention with
rotary embeddings; SiLU MLP as Sigmoid * x; lm head; seqlens_k and total_sequence_length derived
from attention_mask; ``past_key_values.i.key/value`` inputs and ``present.i.key/value`` outputs,
BNSH). One session per runtime runs a prompt, then 20 greedy decode steps feeding each runtime's own
present back: every step's logits match onnxruntime's (rtol 1e-3: float32 sums over a few hundred
terms in a different order; int4 1e-3 as well: jitort's packed int4 kernels round differently from
onnxruntime's dequantise-then-multiply only in float32's last bits) and pick
the same token, and Numba compiles nothing after the first decode step (kernels specialise on
dtype and rank, never on the growing sequence length)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import jitort as ort
from jitort import cache
from oracle import ORT_MAX_IR

MS = "com.microsoft"


def _quant4(rng: np.random.Generator, K: int, N: int, block: int = 32) -> list[np.ndarray]:
    """MatMulNBits int4 weights [N, K/block, block/2] (random nibbles), scales [N * K/block]."""
    blocks = K // block
    return [rng.integers(0, 256, (N, blocks, block // 2), dtype=np.uint8),
            (rng.uniform(0.5, 1.5, N * blocks) / (4 * np.sqrt(K))).astype(np.float32)]


def llama_decoder(vocab: int = 64, hidden: int = 64, heads: int = 4, kv_heads: int = 2, layers: int = 2,
                  ffn: int = 128, max_len: int = 128, int4: bool = False, seed: int = 0) -> onnx.ModelProto:
    """A random-initialised decoder in onnxruntime-genai's graph layout (see the module docstring)."""
    rng = np.random.default_rng(seed)
    H = hidden // heads
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(a, name))
        return name

    def linear(name: str, x: str, K: int, N: int) -> str:
        if int4:
            w, s = _quant4(rng, K, N)
            nodes.append(helper.make_node("MatMulNBits", [x, init(f"{name}.qweight", w), init(f"{name}.scales", s)],
                                          [f"{name}/out"], name=name, domain=MS, K=K, N=N, bits=4, block_size=32))
        else:
            w = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
            nodes.append(helper.make_node("MatMul", [x, init(f"{name}.weight", w)], [f"{name}/out"], name=name))
        return f"{name}/out"

    def norm_weight(name: str) -> str:
        return init(name, (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                            ["batch_size", "total_sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])]
    init("model.embed_tokens.weight", (0.5 * rng.standard_normal((vocab, hidden))).astype(np.float32))
    nodes += [helper.make_node("Gather", ["model.embed_tokens.weight", "input_ids"], ["embeds"]),
              helper.make_node("ReduceSum", ["attention_mask", init("one_axis", np.array([1], np.int64))],
                               ["mask_sum"], keepdims=0),
              helper.make_node("Sub", ["mask_sum", init("one", np.array(1, np.int64))], ["seqlens_k64"]),
              helper.make_node("Cast", ["seqlens_k64"], ["seqlens_k"], to=TensorProto.INT32),
              helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
              helper.make_node("Gather", ["mask_shape", "one"], ["total_len64"], axis=0),
              helper.make_node("Cast", ["total_len64"], ["total_seq_len"], to=TensorProto.INT32)]
    inv = 1.0 / (10000 ** (np.arange(0, H, 2) / H))
    ang = np.arange(max_len)[:, None] * inv[None, :]
    init("cos_cache", np.cos(ang).astype(np.float32))
    init("sin_cache", np.sin(ang).astype(np.float32))
    nodes.append(helper.make_node("SimplifiedLayerNormalization", ["embeds", norm_weight("layers.0.input_ln")],
                                  ["layers.0.ln_out"], epsilon=1e-5, axis=-1, stash_type=1))
    x, residual = "layers.0.ln_out", "embeds"
    cache_shape = ["batch_size", kv_heads, "past_sequence_length", H]
    present_shape = ["batch_size", kv_heads, "total_sequence_length", H]
    for i in range(layers):
        p = f"layers.{i}"
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", TensorProto.FLOAT, cache_shape))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", TensorProto.FLOAT, present_shape))
        q = linear(f"{p}.attn.q_proj", x, hidden, hidden)
        k = linear(f"{p}.attn.k_proj", x, hidden, kv_heads * H)
        v = linear(f"{p}.attn.v_proj", x, hidden, kv_heads * H)
        nodes.append(helper.make_node(
            "GroupQueryAttention", [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k",
                                    "total_seq_len", "cos_cache", "sin_cache"],
            [f"{p}.attn.out", f"present.{i}.key", f"present.{i}.value"], name=f"{p}.attn.GQA", domain=MS,
            num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0, local_window_size=-1,
            scale=float(1 / np.sqrt(H)), softcap=0.0))
        o = linear(f"{p}.attn.o_proj", f"{p}.attn.out", hidden, hidden)
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [o, residual, norm_weight(f"{p}.post_ln")],
                                      [f"{p}.post_ln_out", "", "", f"{p}.post_residual"], domain=MS, epsilon=1e-5))
        x, residual = f"{p}.post_ln_out", f"{p}.post_residual"
        gate = linear(f"{p}.mlp.gate_proj", x, hidden, ffn)
        up = linear(f"{p}.mlp.up_proj", x, hidden, ffn)
        nodes += [helper.make_node("Sigmoid", [gate], [f"{p}.mlp.sig"]),
                  helper.make_node("Mul", [gate, f"{p}.mlp.sig"], [f"{p}.mlp.act"]),
                  helper.make_node("Mul", [f"{p}.mlp.act", up], [f"{p}.mlp.prod"])]
        down = linear(f"{p}.mlp.down_proj", f"{p}.mlp.prod", ffn, hidden)
        last = i == layers - 1
        ln = "final_norm" if last else f"layers.{i + 1}.input_ln"
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [down, residual, norm_weight(ln)],
                                      [f"{ln}_out", "", "", f"{ln}_residual"], domain=MS, epsilon=1e-5))
        x, residual = f"{ln}_out", f"{ln}_residual"
    if int4:
        w, s = _quant4(rng, hidden, vocab)
        nodes.append(helper.make_node("MatMulNBits", [x, init("lm_head.qweight", w), init("lm_head.scales", s)],
                                      ["logits"], domain=MS, K=hidden, N=vocab, bits=4, block_size=32))
    else:
        w = (rng.standard_normal((hidden, vocab)) / np.sqrt(hidden)).astype(np.float32)
        nodes.append(helper.make_node("MatMul", [x, init("lm_head.weight", w)], ["logits"]))
    graph = helper.make_graph(nodes, "llama_decoder", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = ORT_MAX_IR
    return model


def empty_cache(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """The first run's past_key_values: [batch, kv_heads, 0, head_size], as genai feeds them."""
    feeds = {}
    for i in model.graph.input:
        if i.name.startswith("past_key_values."):
            d = i.type.tensor_type.shape.dim
            feeds[i.name] = np.zeros((batch, d[1].dim_value, 0, d[3].dim_value), np.float32)
    return feeds


class Decoder:
    """Greedy decoding on one session: the prompt, then one token per step, presents fed back."""

    def __init__(self, sess, model: onnx.ModelProto, prompt: np.ndarray) -> None:
        self.sess, self.ids = sess, prompt
        self.past = empty_cache(model, prompt.shape[0])
        self.names = [o.name for o in model.graph.output]
        self.length = 0

    def step(self) -> tuple[np.ndarray, np.ndarray]:
        """Run the pending ids; -> (logits of the last position, the next tokens)."""
        self.length += self.ids.shape[1]
        feeds = {"input_ids": self.ids, "attention_mask": np.ones((self.ids.shape[0], self.length), np.int64),
                 **self.past}
        outs = dict(zip(self.names, self.sess.run(None, feeds)))
        self.past = {n.replace("present.", "past_key_values."): outs[n] for n in self.names if n != "logits"}
        last = outs["logits"][:, -1]
        self.ids = last.argmax(-1).reshape(-1, 1).astype(np.int64)
        return last, self.ids[:, 0]


def specialisations() -> int:
    """Machine-code specialisations held by jitort's kernel dispatchers (compiled or loaded from
    Numba's cache alike), and by the generated modules: a new shape that needed new code shows here
    even where the code came from a cache."""
    import sys

    from numba.core.registry import CPUDispatcher
    n = 0
    for name, mod in list(sys.modules.items()):
        if name.startswith(("jitort.kernels", "kernels", "plans")) or name.startswith(("fused_", "plan_")):
            for obj in list(vars(mod).values()):
                if isinstance(obj, CPUDispatcher):
                    n += len(obj.overloads)
    return n + len(sys.modules)


def _ort_session(model: onnx.ModelProto, threads: int = 1):
    import onnxruntime
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("int4,batch", [(False, 1), (True, 2)])
def test_greedy_decode_matches_onnxruntime(int4, batch):
    model = llama_decoder(int4=int4)
    prompt = np.random.default_rng(1).integers(0, 64, (batch, 7)).astype(np.int64)
    mine = Decoder(ort.InferenceSession(model.SerializeToString()), model, prompt)
    ref = Decoder(_ort_session(model), model, prompt)
    compiles = []
    for step in range(21):  # the prompt, then 20 tokens
        got, tok = mine.step()
        compiles.append((cache.compile_count(), specialisations()))
        want, want_tok = ref.step()
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=f"step {step}")
        assert (tok == want_tok).all(), f"step {step}: tokens {tok} vs onnxruntime's {want_tok}"
        for n, a in mine.past.items():  # the caches themselves, valid rows and zero tails alike
            np.testing.assert_allclose(a, ref.past[n], rtol=1e-3, atol=1e-4, err_msg=f"step {step} {n}")
    assert mine.past["past_key_values.0.key"].shape[2] == 7 + 20
    assert compiles[2:] == [compiles[1]] * (len(compiles) - 2), f"new code during decode: {compiles}"


def test_int4_weights_stay_packed():
    """The int4 decoder's session keeps MatMulNBits' weights packed (kernels/nbits.py), not as float
    copies: its constants stay within 1.5x the model's initializer bytes (a float copy of each int4
    weight would be 8x its bytes; the tiny model's would make ~4.5x), and no constant is a float
    matrix of a projection's [K, N] shape (but the model's own float initializers). Its first decode
    step matches onnxruntime."""
    model = llama_decoder(int4=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    sess = ort.InferenceSession(model.SerializeToString())
    consts = [v for v in sess.artifact.consts.values() if isinstance(v, np.ndarray)]
    assert sum(v.nbytes for v in consts) < 1.5 * sum(v.nbytes for v in inits.values())
    shapes = {(int(a.i), int(b.i)) for n in model.graph.node if n.op_type == "MatMulNBits"
              for a, b in [sorted((x for x in n.attribute if x.name in "KN"), key=lambda x: x.name)]}
    floats = [v for v in inits.values() if v.dtype == np.float32]  # the embedding table is [64, 64] too
    copies = [v.shape for v in consts if v.dtype == np.float32 and v.shape in shapes
              and not any(f.shape == v.shape and np.array_equal(f, v) for f in floats)]
    assert shapes and not copies
    prompt = np.random.default_rng(3).integers(0, 64, (1, 20)).astype(np.int64)
    mine, ref = Decoder(sess, model, prompt), Decoder(_ort_session(model), model, prompt)
    for step in range(2):  # the prompt (20 rows: the strip GEMM path), then one token (the GEMV)
        np.testing.assert_allclose(mine.step()[0], ref.step()[0], rtol=1e-3, atol=1e-4, err_msg=f"step {step}")
