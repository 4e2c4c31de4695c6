"""ImageDecoder: jitort has no image codecs; compiling the op raises NotImplemented naming it."""
from __future__ import annotations

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, op


def _refuse(node: Node, g: Graph) -> Call:
    raise OrtNotImplemented(f"{node.describe()}: jitort has no image codecs (JPEG/PNG/BMP/WebP/TIFF/PNM "
                            "decoding is not implemented)")


@op("ImageDecoder", since=20, lower=_refuse)
def ImageDecoder(encoded_stream: np.ndarray, *, pixel_format: str = "RGB") -> np.ndarray:
    raise OrtNotImplemented("ImageDecoder (domain ai.onnx, opset 20): jitort has no image codecs")
