"""The forward pass of a shipped model in ONNX Runtime: no TensorFlow on the screening path.

``core export`` writes ``NAME.onnx`` beside ``NAME.keras``. Its first output is the
pneumonia probability; for networks whose head is global average pooling then one
dense unit, a second output holds the class activation map (the last feature maps
weighted by the head's weights), which for that head equals Grad-CAM up to scale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def cpu_session(model: Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU for a file or a serialised model (thread-safe: sessions
    may be run from many threads); threads bounds its intra-op threads (default: one per core)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no graph-optimisation chatter in every command
    # No memory arena: it keeps the largest batch's buffers for the life of the process (320 MB
    # after one archive batch of 32 images at three zooms, 57 MB without it, and no slower), which
    # puts a Ray worker or the public demo over its memory budget.
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """Thread-safe (ONNX Runtime sessions may be run from many threads)."""

    def __init__(self, path: Path, threads: int | None = None):
        self._session = cpu_session(path, threads)
        self._input = self._session.get_inputs()[0].name
        self.has_cam = len(self._session.get_outputs()) > 1

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N,), class activation maps (N, members, h, w) or None) for a preprocessed batch."""
        outputs = self._session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})
        cams = np.moveaxis(outputs[1], -1, 1) if self.has_cam else None
        return outputs[0].reshape(-1), cams
