"""IR -> Python source for Numba (installed as ``jitort.codegen``). Data flows top to bottom:

* ``emit``       — lowering and emission of a partitioned graph: picks the plan target by provider;
* ``plan``       — the plan emitter core (``Step``, ``PlanTarget`` = the CPU plan's hooks, ``PlanEmitter``);
* ``cuda_plan``  — the CUDA target's hooks: arena slots, uploads, launches, the run context; PTX checks;
* ``feed_check`` — the plan's ``run_feed`` fast path; ``broadcast`` — fused groups' output shapes;
* ``names``      — plan locals, hoisted constants, literals; ``linemap`` — generated line -> ONNX node;
* ``cpu`` / ``cuda`` — fused elementwise kernels (``@njit`` / ``@cuda.jit`` source);
* ``source``     — ``IndentedBuffer``, content hashes, the only ways model text enters source.

Nothing is imported here: ``jitort.codegen.source`` is imported by kernel modules at start-up.
"""
