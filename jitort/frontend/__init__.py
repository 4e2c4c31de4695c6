"""The frontend: ModelProto -> jitort IR.

``importer`` loads a model (path, bytes, ModelProto; external data beside it), runs onnx's shape
inference and builds the IR; ``functions`` expands function ops jitort has no kernel for and applies
the node ``rewrites``; ``refine`` sharpens types where onnx's inference stops short. Proto-level
helpers the kernels need too (attribute values, tensor data, types) live below in ``jitort.protos``.

Importing this package imports nothing: use ``jitort.frontend.importer``.
"""
