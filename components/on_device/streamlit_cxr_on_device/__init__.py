"""Screen chest X-rays in the browser: a Streamlit Components v2 package.

The browser decodes each file, runs the same checks, framing, contrast step, test-time zooms and
forward pass as the server (onnxruntime-web and OpenCV.js, pinned in vendor.py), and hands Python
only numbers and codes. The dashboard's side of it (which files, which constants, the words) is in
ui/on_device.py; this package is the frontend and its two mount points.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

PROJECT = "streamlit-cxr-on-device"  # the [project] name in pyproject.toml: Streamlit finds the assets by it

_mounts: dict[str, Callable[..., Any]] = {}


def _component(name: str) -> Callable[..., Any]:
    """The named component's mount command, defined at its first use: file-backed assets resolve only
    inside a Streamlit runtime, which scans the installed packages' manifests when it starts."""
    if name not in _mounts:
        _mounts[name] = st.components.v2.component(f"{PROJECT}.{name}", js=f"{name}.js", css="style.css")
    return _mounts[name]


def _ignore() -> None:
    """State changes rerun the script, which reads them: no callback work is needed."""


def screen(data: dict[str, Any], key: str = "on_device",
           on_change: Callable[[], None] = _ignore) -> Any:
    """Mount the on-device screener. Its state: ``status`` (self-test and model files: phase, ok,
    reason, missing hashes) and ``results`` (the last batch: one row of numbers and codes per file).
    Its trigger ``upload``: the handed files' bytes, base64, once the user asks to upload them (a
    trigger, unlike state, is not kept in the widget state nor sent again on later runs).
    Always the same ``key``: without one a v2 component remounts on every run (streamlit#14710)."""
    return _component("screen")(key=key, data=data, on_status_change=on_change, on_results_change=on_change,
                                on_upload_change=on_change)


def picture(picture_id: str, heat: bool, opacity: float, caption: str, key: str) -> None:
    """One screened X-ray (and its heat map) drawn in the browser from what the batch kept there."""
    _component("picture")(key=key, data={"id": picture_id, "heat": heat, "opacity": opacity, "caption": caption})
