"""The data set listing now lives a layer down, in ``core.analysis.data``, where analysis can import it.

This name stays for the callers not yet moved (``core/cli.py``, ``tests/test_photos.py``, owned
by other changes); drop it once they import ``core.analysis.data``.
"""
from core.analysis.data import *
