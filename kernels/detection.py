"""NonMaxSuppression: greedy per-(batch, class) box selection by score, suppressing boxes whose
IoU with an already selected box exceeds the threshold."""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


@njit(cache=True, nogil=True, error_model="numpy")
def _select(boxes: np.ndarray, order: np.ndarray, center: int, iou_threshold: float, limit: int) -> np.ndarray:
    """Indices (into ``boxes``) kept from the score-ordered candidates ``order``."""
    n = order.shape[0]
    x0 = np.empty(boxes.shape[0])
    y0 = np.empty(boxes.shape[0])
    x1 = np.empty(boxes.shape[0])
    y1 = np.empty(boxes.shape[0])
    for i in range(boxes.shape[0]):
        if center == 0:  # [y1, x1, y2, x2], corners in any order
            a, b = float(boxes[i, 1]), float(boxes[i, 3])
            x0[i], x1[i] = min(a, b), max(a, b)
            a, b = float(boxes[i, 0]), float(boxes[i, 2])
            y0[i], y1[i] = min(a, b), max(a, b)
        else:  # [x_center, y_center, width, height]
            x0[i] = boxes[i, 0] - boxes[i, 2] / 2.0
            x1[i] = boxes[i, 0] + boxes[i, 2] / 2.0
            y0[i] = boxes[i, 1] - boxes[i, 3] / 2.0
            y1[i] = boxes[i, 1] + boxes[i, 3] / 2.0
    keep = np.empty(min(n, limit), np.int64)
    k = 0
    for c in range(n):
        if k >= limit:
            break
        i = order[c]
        ok = True
        for s in range(k):
            j = keep[s]
            ix0, ix1 = max(x0[i], x0[j]), min(x1[i], x1[j])
            iy0, iy1 = max(y0[i], y0[j]), min(y1[i], y1[j])
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            inter = (ix1 - ix0) * (iy1 - iy0)
            a1 = (x1[i] - x0[i]) * (y1[i] - y0[i])
            a2 = (x1[j] - x0[j]) * (y1[j] - y0[j])
            union = a1 + a2 - inter
            if inter <= 0.0 or a1 <= 0.0 or a2 <= 0.0 or union <= 0.0:
                continue
            if inter / union > iou_threshold:
                ok = False
                break
        if ok:
            keep[k] = i
            k += 1
    return keep[:k]


def _scalar(v: np.ndarray | None, default: float) -> float:
    if v is None or v.size == 0:
        return default
    return float(v.reshape(-1)[0])


@op("NonMaxSuppression", since=10)
def NonMaxSuppression(boxes: np.ndarray, scores: np.ndarray, max_output_boxes_per_class: np.ndarray | None = None,
                      iou_threshold: np.ndarray | None = None, score_threshold: np.ndarray | None = None, *,
                      center_point_box: int = 0) -> np.ndarray:
    """boxes [batch, boxes, 4], scores [batch, classes, boxes] -> [selected, 3] (batch, class, box)."""
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[0] != boxes.shape[0] \
            or scores.shape[2] != boxes.shape[1]:
        raise InvalidArgument(f"NonMaxSuppression: boxes {list(boxes.shape)} and scores {list(scores.shape)} must "
                              "be [batch, boxes, 4] and [batch, classes, boxes]")
    if center_point_box not in (0, 1):
        raise InvalidArgument(f"NonMaxSuppression: center_point_box must be 0 or 1, got {center_point_box}")
    limit = int(max(_scalar(max_output_boxes_per_class, 0), 0))
    iou = _scalar(iou_threshold, 0.0)
    has_score = score_threshold is not None and score_threshold.size > 0
    st = _scalar(score_threshold, 0.0)
    out: list[np.ndarray] = []
    b64 = boxes.astype(np.float64)
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c].astype(np.float64)
            cand = np.nonzero(s > st)[0] if has_score else np.arange(s.shape[0])
            order = cand[np.lexsort((cand, -s[cand]))]  # score descending, lower index first on ties
            keep = _select(b64[b], order.astype(np.int64), center_point_box, iou, limit) if limit else order[:0]
            if keep.size:
                out.append(np.stack([np.full(keep.size, b), np.full(keep.size, c), keep], axis=1))
    if not out:
        return np.zeros((0, 3), np.int64)
    return contiguous(np.concatenate(out).astype(np.int64))
