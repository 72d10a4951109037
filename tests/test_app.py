"""Every page through Streamlit's AppTest, on the shipped models."""
from pathlib import Path

import pytest
from conftest import encode, xray_like
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["home", "screen", "explorer", "compare", "explain"]
TIMEOUT = 180


def page(name: str) -> AppTest:
    app = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_entry_point_opens_the_home_page():
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    app.run()
    assert not app.exception
    assert "pneumonia screening" in app.title[0].value.lower()
    assert any("not a diagnosis" in m.value for m in app.markdown)


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_without_exception(name):
    page(name)


def test_screen_page_screens_an_upload_and_reports_a_bad_file():
    app = page("screen")
    app.file_uploader[0].set_value([
        ("chest.jpeg", encode(xray_like(1, True, 256)), "image/jpeg"),
        ("broken.png", b"\x89PNG\r\n\x1a\nbroken", "image/png"),
    ])
    app.run()
    assert not app.exception
    [probability] = [m for m in app.metric if m.label == "Probability of pneumonia"]
    assert probability.value.endswith("%")
    assert any("broken.png" in e.value and "corrupt" in e.value for e in app.error)
    table = app.dataframe[0].value
    assert list(table["status"]) == ["ok", "error"]
    assert any("Heat map" in caption for image in app.image for caption in image.captions), "no heat map shown"


def test_screen_page_uses_the_chosen_operating_point_of_the_card():
    from core.serving import registry

    card = registry.load_card(registry.default_model_name())
    app = page("screen")
    app.file_uploader[0].set_value(("chest.jpeg", encode(xray_like(2, False, 256)), "image/jpeg"))
    app.sidebar.radio[0].set_value("balanced")
    app.run()
    assert not app.exception
    assert f"balanced threshold {card['operating_points']['balanced']:.3f}" in " ".join(c.value for c in app.caption)


def test_explorer_profiles_a_data_folder(tiny_data):
    app = page("explorer")
    app.radio[0].set_value("A data folder on this machine")
    app.run()
    app.text_input[0].set_value(str(tiny_data))
    app.run()
    assert not app.exception
    assert any(s.value == "Samples" for s in app.subheader)
    assert any("train: 60 images" in c.value for c in app.caption)


def test_compare_evaluates_on_a_folder_with_top_losses(tiny_data):
    app = page("compare")
    app.text_input[0].set_value(str(tiny_data))
    app.run()
    split = next(s for s in app.selectbox if s.label == "Split")
    split.set_value("test")
    app.button[0].click()
    app.run()
    assert not app.exception
    assert app.dataframe[-1].value["n"][0] == 20
    assert any("Top 8 losses" in m.value for m in app.markdown)


def test_explain_page_shows_heat_map_and_activations():
    app = page("explain")
    app.file_uploader[0].set_value(("chest.png", encode(xray_like(3, True, 200), "PNG"), "image/png"))
    app.run()
    assert not app.exception
    assert any(s.value == "Activation maps" for s in app.subheader)


def test_compare_page_shows_training_curves_and_tuning_sections():
    app = page("compare")
    headers = [s.value for s in app.subheader]
    assert "Learning-rate finder and hyper-parameter search" in headers and "Threshold trade-off" in headers
    assert "Training curves" in [t.label for t in app.tabs]
    # The shipped models carry shift-check reports, so the tab draws them.
    assert "Shift check" in [t.label for t in app.tabs]
    assert app.selectbox(key="shift_metric").value == "screening specificity"
    assert not any("No shift check" in i.value for i in app.info)
