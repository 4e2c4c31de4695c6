"""The compile service: a model and its session options -> a bound ``Artifact``, through the cache.

One path for every session (and for ``jitort compile``, which runs a session into an artifact
directory):

1. the key (:func:`cache_key`, the only place it is computed): the model's bytes, providers,
   optimisation flags, profiling and the CUDA library, plus jitort/numba versions and the CPU;
2. lookup: an AOT artifact directory if the session names one, else the cache entry under the key;
3. on a miss: compile workers started early (``jitort.compile_pool``), the frontend
   (``jitort.frontend.importer``), the compiler (``jitort.compiler``: passes, lowering, emission),
   the workers precompiling the new kernels;
4. ``start``: bind (import the plan and kernels; Numba loads or compiles), then for a fresh compile a
   warm-up run (the library kernels the plan calls compile now, not in the user's first run) and the
   entry saved in the background.

What the session keeps is the ``Artifact`` record (``jitort.compiled``), the same whatever the path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from jitort import artifact, cache, compile_pool, node_errors
from jitort.codegen.plan import PROFILE_STEPS
from jitort.compiled import Artifact
from jitort.errors import Fail
from jitort.ir import Graph
from jitort.kernels import registry
from jitort.passes.partition import CUDA
from jitort.runtime_info import warn

if TYPE_CHECKING:  # onnx (and with it ml_dtypes, ~0.7 s) is imported by the compile path only
    import onnx


def cache_key(model_bytes: bytes, providers: list[str], fold: bool, fuse: bool, profile: bool = False
              ) -> tuple[str, str]:
    """(entry key, model sha256) of a model compiled with these options."""
    options: dict[str, Any] = {"providers": list(providers), "fold": fold, "fuse": fuse}
    if profile:  # the profiled plan is an entry of its own; the plain plan's key is unchanged
        options["profile"] = PROFILE_STEPS
    if CUDA in providers:  # CUDA plans call jitort.kernels.cuda, outside the library hash
        from jitort.kernels.cuda import library_hash as cuda_library_hash
        options["cuda_library"] = cuda_library_hash()
    return artifact.model_key(model_bytes, [], options)


@dataclass
class Request:
    """What a session asks for. ``proto`` has the session's model-changing options applied
    (free-dimension overrides, added initializers); ``raw`` is the bytes it was parsed from when
    that is the whole model (None: serialise ``proto``); ``reload`` returns the same model again
    (``Artifact.ir`` of a loaded artifact rebuilds from it, so no ModelProto is kept alive)."""

    proto: onnx.ModelProto
    raw: bytes | None
    providers: list[str]
    config: dict[str, str]
    reload: Callable[[], onnx.ModelProto]
    fold: bool = True
    fuse: bool = True
    profile: bool = False
    artifact_dir: Path | None = None
    title: str = "model"
    logid: str = ""
    progress: Callable[[int, int, str], None] | None = None


@dataclass
class Compilation:
    """The artifact a request resolved to, where its modules live, and the cache's notes."""

    request: Request
    artifact: Artifact
    root: Path                  # where its modules are imported from (cache root or AOT directory)
    policy: artifact.CachePolicy

    def start(self, slow_bind: Callable[[dict], list[Any]]) -> tuple[Callable[..., tuple], Callable[..., tuple]]:
        """Bind the plan -> (run, run_feed); after a fresh compile also warm up (unless the config
        says ``session.jitort.warmup=0`` or the model must not run twice: ``warmup_safe``) and save
        the entry in the background. ``slow_bind``: the session's general feed check."""
        req, art = self.request, self.artifact
        run, run_feed = art.bind(slow_bind, self.root, req.progress)
        if art.fresh:
            if req.config.get("session.jitort.warmup", "1") != "0" and warmup_safe(req.proto, req.providers):
                self._warm_up(run_feed)
            if self.policy.enabled:
                artifact.save_in_background(artifact.entry_dir(self.policy.root, art.key), artifact.manifest_for(art),
                                            art.consts, self.policy.notes)
        return run, run_feed

    def _warm_up(self, run_feed: Callable[..., tuple]) -> None:
        """One run on inputs that are valid by construction (``models.warmup_feeds``); a failure
        only leaves the kernels to compile lazily, never fails the session."""
        from jitort.models import warmup_feeds  # deliberate start-up deferral: after a fresh compile only
        t0 = time.perf_counter()
        mark = cache.compile_count()
        try:
            run_feed(warmup_feeds(self.request.proto))
        except Exception as e:  # noqa: BLE001 - best effort: the real feeds decide what runs
            self.policy.notes.append(f"warm-up run skipped: {type(e).__name__}: {str(e)[:200]}")
        self.artifact.compiled += cache.compiled_since(mark)
        self.artifact.seconds += time.perf_counter() - t0


def resolve(req: Request) -> Compilation:
    """The request's artifact: from the AOT directory, the cache, or compiled now (unbound)."""
    policy = artifact.policy(req.config)
    key, model_hash = cache_key(req.raw if req.raw is not None else req.proto.SerializeToString(),
                                req.providers, req.fold, req.fuse, req.profile)
    found, root = _find(req, policy, key, model_hash)
    if req.profile and found is not None and PROFILE_STEPS not in found.consts:
        found = None  # an artifact holds the plain plan: profiling compiles the profiled one
    if found is None:
        root = policy.root
        found = _compile(req, root)
    else:
        reload, providers, fold, fuse = req.reload, req.providers, req.fold, req.fuse  # not the ModelProto
        found.rebuild = lambda: rebuild_ir(reload(), providers, fold, fuse)
    found.key, found.model_hash = key, model_hash
    return Compilation(req, found, root, policy)


def rebuild_ir(proto: onnx.ModelProto, providers: list[str], fold: bool, fuse: bool) -> Graph:
    """The IR after passes (and the notes lowering adds), without emitting or compiling anything."""
    # deliberate start-up deferral: the frontend and compiler (and onnx) only when something compiles
    from jitort.codegen.emit import lower
    from jitort.compiler import optimize
    from jitort.frontend.importer import import_model
    g = optimize(import_model(proto), providers, fold=fold, fuse=fuse)
    lower(g)
    return g


def _compile(req: Request, root: Path) -> Artifact:
    # deliberate start-up deferral: a session that loads its artifact imports no compiler (nor onnx)
    from jitort.compiler import compile_graph
    from jitort.frontend.importer import import_model
    workers = None
    if CUDA not in req.providers:
        workers = compile_pool.early_workers(len(req.proto.graph.node), req.config, conv_dtypes(req.proto.graph))
    compiled: Artifact | None = None
    try:
        compiled = compile_graph(import_model(req.proto), req.providers, title=req.title, profile=req.profile,
                                 fold=req.fold, fuse=req.fuse)
    except Exception as e:
        mapped = node_errors.at_creation(e)  # internal errors never leak: onnxruntime's class
        if mapped is None:
            raise
        raise mapped from e
    finally:
        if workers is not None:
            _precompile(compiled, root, workers)  # or, on an error, just end them
    return compiled


def _precompile(compiled: Artifact | None, root: Path, workers: compile_pool.Workers) -> None:
    """Compile the new model's kernels in the worker processes too (see ``jitort.compile_pool``)."""
    t0 = time.perf_counter()
    mark = cache.compile_count()
    if compiled is None or compiled.graph is None:
        workers.close()
        return
    compile_pool.precompile(compile_pool.jobs_for(compiled.steps, compiled.graph), root, workers)
    compiled.compiled += cache.compiled_since(mark)
    compiled.seconds += time.perf_counter() - t0


def _find(req: Request, policy: artifact.CachePolicy, key: str, model_hash: str) -> tuple[Artifact | None, Path]:
    art = req.artifact_dir
    if art is not None:
        try:
            c = artifact.load_entry(art, art)
            m = artifact.load_manifest(art)
            if m.model_sha256 != model_hash:
                raise artifact.StaleEntry("the artifact was built from a different model")
            if m.target.startswith("cuda") != (CUDA in req.providers):
                raise artifact.StaleEntry(f"the artifact was built for target {m.target}, this session "
                                          f"runs on {req.providers}")
            artifact.import_library_objects(art, policy.root)
            return c, art
        except (artifact.StaleEntry, FileNotFoundError) as e:
            if policy.strict:
                raise Fail(f"artifact {art} cannot be used: {e}") from None
            warn(f"jitort: artifact {art} is stale ({e}); compiling the model instead",
                 RuntimeWarning, stacklevel=4, logid=req.logid)
            policy.notes.append(f"artifact stale: {e}")
    if not policy.enabled:
        return None, policy.root
    entry = artifact.entry_dir(policy.root, key)
    artifact.wait_pending(entry)  # a session of this process may still be writing it
    try:
        return artifact.load_entry(entry, policy.root, key, discard_tampered=not policy.strict), policy.root
    except FileNotFoundError:
        return None, policy.root
    except artifact.StaleEntry as e:
        if policy.strict:
            raise Fail(f"jitort cache entry {entry} is stale and strict mode is on: {e}") from None
        if isinstance(e, artifact.TamperedEntry):
            warn(f"jitort: cache entry {entry} failed its integrity check ({e}); compiling the model again",
                 RuntimeWarning, stacklevel=4, logid=req.logid)
        policy.notes.append(f"cache entry rebuilt: {e}")
        return None, policy.root


def warmup_safe(proto: onnx.ModelProto, providers: list[str]) -> bool:
    """May a warm-up run execute this model? Not on CUDA, not with non-tensor inputs, not with an op
    that draws random numbers or may loop without end, not with model-local functions."""
    if CUDA in providers or any(not v.type.HasField("tensor_type") for v in proto.graph.input):
        return False
    inits = {t.name for t in proto.graph.initializer}

    def unsafe(n: onnx.NodeProto) -> bool:  # the op table: random ops, Loop, Dropout with a run-time mode
        return not registry.warmup_safe(n.op_type, n.domain, list(n.input), inits)

    def nodes(g: onnx.GraphProto) -> Any:
        for n in g.node:
            yield n
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else list(a.graphs)):
                    yield from nodes(sub)
    return not any(unsafe(n) for n in nodes(proto.graph)) and not proto.functions


def conv_dtypes(g: onnx.GraphProto) -> tuple[str, ...]:
    """The compute dtypes of the main graph's Conv nodes (float16 computes in float32): what the
    compile workers prepare the packed GEMM for. A weight's type comes from its initializer, a
    Constant/ConstantOfShape producing it, or the graph input it is; float32 when none says."""
    import onnx  # on the compile path only, where the frontend has imported it already
    T = onnx.TensorProto
    kinds = {t.name: t.data_type for t in g.initializer}
    kinds.update({v.name: v.type.tensor_type.elem_type for v in g.input if v.type.HasField("tensor_type")})
    for n in g.node:
        if n.op_type in ("Constant", "ConstantOfShape") and n.output:
            vals = [a.t.data_type for a in n.attribute if a.name == "value"]
            kinds[n.output[0]] = vals[0] if vals else T.FLOAT
    out = set()
    for n in g.node:
        if n.op_type == "Conv" and n.domain in ("", "ai.onnx") and len(n.input) > 1:
            k = kinds.get(n.input[1], T.FLOAT)
            if k in (T.FLOAT, T.FLOAT16, T.DOUBLE):
                out.add("float64" if k == T.DOUBLE else "float32")
    return tuple(sorted(out))
