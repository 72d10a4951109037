"""The public demo's memory budget: TensorFlow is refused, and said so, where it would take the server past it."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, encode, xray_like
from streamlit.testing.v1 import AppTest

from core.serving import memory

TIMEOUT = 180


def test_the_demo_setting_sets_the_default_budget_and_a_budget_of_its_own_overrides_it():
    assert memory.memory_budget_mb({}) is None
    assert memory.memory_budget_mb({"CXR_PUBLIC_DEMO": "0"}) is None
    assert memory.memory_budget_mb({"CXR_PUBLIC_DEMO": "1"}) == memory.DEMO_BUDGET_MB == 400
    assert memory.memory_budget_mb({"CXR_PUBLIC_DEMO": " True "}) == 400
    assert memory.memory_budget_mb({"CXR_PUBLIC_DEMO": "1", "CXR_MEMORY_BUDGET_MB": "1500"}) == 1500
    assert memory.memory_budget_mb({"CXR_MEMORY_BUDGET_MB": "900"}) == 900
    with pytest.raises(ValueError, match="CXR_MEMORY_BUDGET_MB must be a number of megabytes, not '400MB'"):
        memory.memory_budget_mb({"CXR_MEMORY_BUDGET_MB": "400MB"})


def test_tensorflow_is_refused_only_where_it_would_pass_the_budget():
    cost = memory.TENSORFLOW_MB
    assert memory.refuse_tensorflow(330, None, loaded=False) is None  # no budget: as before
    assert memory.refuse_tensorflow(330, 330 + cost, loaded=False) is None  # just fits
    refusal = memory.refuse_tensorflow(330, 400, loaded=False)
    assert refusal == (f"Loading TensorFlow would take this server to about {330 + cost:.0f} MB, past its memory "
                       "budget of 400 MB: the server would stop for every visitor.")
    assert memory.refuse_tensorflow(331, 330 + cost, loaded=False)
    # Once loaded, its memory is spent: refusing would save nothing.
    assert memory.refuse_tensorflow(950, 1000, loaded=True) is None
    # Memory that cannot be measured is not assumed to fit.
    assert "cannot measure its own memory" in memory.refuse_tensorflow(None, 10_000, loaded=False)


def test_the_resident_memory_is_this_processs():
    # pytest with numpy, Streamlit and ONNX Runtime imported: tens of MB at least, far below a terabyte.
    assert 20 < memory.resident_mb() < 1_000_000


DEMO_VISITS = """
import json, sys
from streamlit.testing.v1 import AppTest
from core.analysis.synthetic import chest_xray, encode

entry = AppTest.from_file("streamlit_app.py", default_timeout=300).run()  # under the budget, as the server starts
explain = AppTest.from_file("app_pages/explain.py", default_timeout=300).run()
explain.file_uploader[0].set_value(("chest.png", encode(chest_xray(3, True, 200), "PNG"), "image/png")).run()
next(r for r in explain.radio if r.label == "Method").set_value("gradcam").run()
explain.toggle(key="load_tensorflow").set_value(True).run()
explorer = AppTest.from_file("app_pages/explorer.py", default_timeout=300).run()
explorer.radio[0].set_value("Download the public data set").run()
explorer.button[0].click().run()
print(json.dumps({
    "exceptions": [e.value for app in (entry, explain, explorer) for e in app.exception],
    "explain": [w.value for w in explain.warning],
    "layers": [s.label for s in explain.selectbox if s.label == "Layer"],
    "explorer": [w.value for w in explorer.warning],
    "errors": [e.value for e in explorer.error],
    "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules,
}))
"""


def test_with_the_demo_setting_grad_cam_and_the_download_are_refused_in_plain_words_and_load_no_tensorflow():
    """In a process of its own: another test of this session may have loaded TensorFlow already."""
    done = subprocess.run([sys.executable, "-c", DEMO_VISITS], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, "CXR_PUBLIC_DEMO": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert not seen["exceptions"], seen
    assert not seen["tensorflow"], seen
    # What was refused and why, then what the visitor can do instead.
    refusal = next(w for w in seen["explain"] if "TensorFlow" in w)
    assert "past its memory budget of 400 MB" in refusal and "stop for every visitor" in refusal, refusal
    assert '"Class activation map (last layer)" or "Occlusion sensitivity"' in refusal, refusal
    assert "run your own copy" in refusal, refusal
    assert not seen["layers"], seen
    download = next(w for w in seen["explorer"] if "TensorFlow" in w)
    assert "past its memory budget of 400 MB" in download and "python -m core download" in download, download
    assert not seen["errors"], seen  # no download was tried


def test_a_budget_that_holds_tensorflow_lets_grad_cam_run(monkeypatch):
    monkeypatch.setenv("CXR_MEMORY_BUDGET_MB", "1000000")
    app = AppTest.from_file(str(ROOT / "app_pages" / "explain.py"), default_timeout=TIMEOUT).run()
    app.file_uploader[0].set_value(("chest.png", encode(xray_like(3, True, 200), "PNG"), "image/png")).run()
    next(r for r in app.radio if r.label == "Method").set_value("gradcam").run()
    app.toggle(key="load_tensorflow").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not [w for w in app.warning if "memory budget" in w.value]
    assert [s for s in app.selectbox if s.label == "Layer"] and len(app.image) >= 2
