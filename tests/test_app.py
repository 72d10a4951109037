"""Every page through Streamlit's AppTest, on the shipped models."""
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, xray_like
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["home", "screen", "explorer", "compare", "explain", "site"]
TIMEOUT = 180


def page(name: str) -> AppTest:
    app = AppTest.from_file(str(ROOT / "app_pages" / f"{name}.py"), default_timeout=TIMEOUT)
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


def choose_server(app: AppTest) -> AppTest:
    """The server path, as a user picks it: screening on the device is offered first, and AppTest has
    no browser to run it (tests/test_on_device.py drives that in Chromium)."""
    for radio in app.radio:
        if radio.label == "Where to screen":
            radio.set_value("Upload to the server").run()
    return app


def _screened(app: AppTest, files) -> AppTest:
    choose_server(app)
    app.file_uploader[0].set_value(files)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_screen_page_shows_a_triage_summary_with_flagged_images_first():
    from core.serving.predictor import Predictor

    images = {f"chest{i}.jpeg": encode(xray_like(i, bool(i % 2), 256)) for i in range(4)}
    default = Predictor.load()
    flagged = {n for n, b in images.items() if default.screen(b).label == "PNEUMONIA"}
    app = _screened(page("screen"), [(n, b, "image/jpeg") for n, b in images.items()]
                    + [("broken.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")])
    summary = next(m.value for m in app.markdown if "flagged" in m.value)
    assert f"{len(flagged)} of 5 flagged" in summary and "1 refused" in summary
    # Cards in order: flagged (highest probability first), refused, then the rest.
    order = [m.value.strip("*") for m in app.markdown if m.value.startswith("**") and m.value.strip("*") in
             {*images, "broken.png"}]
    assert set(order[:len(flagged)]) == flagged and order[len(flagged)] == "broken.png"
    assert any("broken.png" not in e.value and "corrupt" in e.value for e in app.error) or any(
        "corrupt" in w.value for w in app.error + app.warning)
    probabilities = [m.value for m in app.metric if m.label == "Probability of pneumonia"]
    assert len(probabilities) == 4 and all(p.endswith("%") and p not in ("100.0%", "0.0%") for p in probabilities)
    # What a probability means, and where it stops meaning it, beside every one of them.
    assert all("training hospital" in m.proto.help and "another hospital or period" in m.proto.help
               for m in app.metric if m.label == "Probability of pneumonia")


def test_screen_page_keeps_results_and_settings_after_visiting_another_page():
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    app.switch_page("app_pages/screen.py").run()
    app = _screened(app, ("chest.jpeg", encode(xray_like(2, True, 256)), "image/jpeg"))
    app.radio(key="operating_point").set_value("balanced").run()
    screened = dict(app.session_state["screen_cache"])
    app.switch_page("app_pages/home.py").run()
    assert not app.file_uploader  # on Home now
    app.switch_page("app_pages/screen.py").run()
    assert not app.exception
    assert any("Your last batch (1 images)" in i.value for i in app.info)
    assert app.radio(key="operating_point").value == "balanced"
    assert any(m.label == "Probability of pneumonia" for m in app.metric)
    # Moving the opacity slider redraws: nothing new is screened.
    app.slider(key="opacity").set_value(0.8).run()
    assert dict(app.session_state["screen_cache"]) == screened


def test_screen_page_uses_the_chosen_operating_point_of_the_card():
    from core.serving import registry

    card = registry.load_card(registry.default_model_name())
    app = page("screen")
    app.radio(key="operating_point").set_value("balanced").run()
    app = _screened(app, ("chest.jpeg", encode(xray_like(2, False, 256)), "image/jpeg"))
    assert f"balanced threshold **{card.operating_points['balanced']:.3f}** from the model card" in " ".join(
        c.value for c in app.caption)


def test_explain_page_refuses_what_the_screen_page_refuses():
    rgb = np.zeros((200, 200, 3), np.uint8)
    rgb[..., 0], rgb[50:150, 50:150, 1] = 200, 255  # a colour picture, not an X-ray
    app = page("explain")
    app.file_uploader[0].set_value(("photo.png", encode(rgb, "PNG"), "image/png"))
    app.run()
    assert not app.exception
    assert any("photo.png" in e.value and "not a chest X-ray" in e.value for e in app.error)
    assert not [m for m in app.metric if m.label == "Probability of pneumonia"]


def test_site_page_calibrates_on_a_zip_and_offers_the_profile(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, name in enumerate(("NORMAL", "PNEUMONIA")):
            for i in range(10):
                archive.writestr(f"site/{name}/IM-{i:04d}-0001.jpeg", encode(xray_like(50 * label + i, bool(label), 200)))
        archive.writestr("site/NORMAL/readme.png", b"not an image")
    app = page("site")
    app.radio[0].set_value("Upload a zip").run()
    app.file_uploader[0].set_value(("site.zip", buffer.getvalue(), "application/zip"))
    app.run()
    app.button[0].click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("readme.png" in m.value and "not a supported image" in m.value for m in app.markdown)
    assert any("cannot show a sensitivity of 0.98" in w.value for w in app.warning)
    assert [t.label for t in app.get("download_button")] or app.get("download_button")


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


def explain_with(model: str):
    """The Explain page with a shipped model chosen and a drawn pneumonia X-ray uploaded."""
    app = page("explain")
    app.selectbox(key="model").set_value(model).run()
    app.file_uploader[0].set_value(("chest.png", encode(xray_like(3, True, 200), "PNG"), "image/png"))
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_explain_page_explains_an_ensemble_by_its_members_mean_and_a_member_by_grad_cam_on_request():
    from core.serving import registry

    ensembles = [c.name for c in registry.cards() if c.architecture.startswith("ensemble of")]
    assert ensembles, "models/ ships an ensemble"
    app = explain_with(ensembles[0])
    # By default the class activation map, the mean of its members' maps, as the Screen page shows it.
    method = next(r for r in app.radio if r.label == "Method")
    assert method.value == "cam" and any(s.value == "Activation maps" for s in app.subheader)
    own = app.image[1].value
    method.set_value("gradcam").run()
    # The page says what Grad-CAM costs before it loads TensorFlow, and waits to be asked.
    assert any("600 MB" in i.value for i in app.info) and not app.selectbox(key="model").value is None
    assert not [s for s in app.selectbox if s.label == "Layer"]
    app.toggle(key="load_tensorflow").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    layer = next(s for s in app.selectbox if s.label == "Layer")
    # One member's last convolutional layer: that member's map alone, another image.
    layer.set_value(next(o for o in layer.options if "member_0/stage3_out" in o)).run()
    assert not app.exception and app.image[1].value != own


TENSORFLOW_FREE_PAGES = """
import sys
from streamlit.testing.v1 import AppTest
from core.analysis.synthetic import chest_xray, encode

def run(page, upload=None, method=None):
    app = AppTest.from_file(f"app_pages/{page}.py", default_timeout=300)
    app.run()
    if upload:
        for radio in app.radio:  # the server path (screening on the device needs a browser)
            if radio.label == "Where to screen":
                radio.set_value("Upload to the server").run()
        app.file_uploader[0].set_value(("chest.png", encode(chest_xray(3, True, 200), "PNG"), "image/png"))
        app.run()
    if method:
        next(r for r in app.radio if r.label == "Method").set_value(method).run()
    assert not app.exception, [e.value for e in app.exception]
    print(page, method or "-", len(app.image), "tensorflow" in sys.modules or "keras" in sys.modules)

import threading
import ui.common
ui.common.WARM_UP_DELAY_S = 0.0
entry = AppTest.from_file("streamlit_app.py", default_timeout=300)
entry.run()
assert not entry.exception, [e.value for e in entry.exception]
for thread in threading.enumerate():
    if thread.name == "warm-analyst-pages":
        thread.join(300)
print("entry - 0", "tensorflow" in sys.modules or "keras" in sys.modules, "pandas" in sys.modules)
for name in ("home", "screen", "explorer", "compare", "explain", "site"):
    run(name)
run("screen", upload=True)
run("explain", upload=True, method="cam")
run("explain", upload=True, method="occlusion")
"""


def test_every_page_and_the_default_explanations_run_without_tensorflow_in_memory():
    """The public demo's memory: TensorFlow (about 600 MB) loads only when a user asks for Grad-CAM."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", TENSORFLOW_FREE_PAGES], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    # The entry point's background import of the analyst pages' modules ran, and loaded no TensorFlow.
    assert rows[0] == ["entry", "-", "0", "False", "True"], done.stdout
    rows = rows[1:]
    assert len(rows) == 9, done.stdout
    assert all(row[-1] == "False" for row in rows), done.stdout
    # The explanations showed the X-ray, its heat map and the activation grid; Screen, its result.
    assert all(int(row[2]) >= 3 for row in rows if row[0] == "explain" and row[1] != "-"), done.stdout
    assert int(rows[6][2]) >= 1, done.stdout


def test_explain_page_explains_a_shipped_framed_model():
    from core.serving import registry

    framed = [c.name for c in registry.cards() if c.preprocess.get("frame")]
    assert framed, "models/ ships a model trained with --frame (cxrnet_framed)"
    app = explain_with(framed[0])
    assert "inside the central thorax region" in app.image[1].captions[0]
    assert any(s.value == "Activation maps" for s in app.subheader)


def test_compare_page_shows_training_curves_and_tuning_sections():
    app = page("compare")
    headers = [s.value for s in app.subheader]
    assert "Learning-rate finder and hyper-parameter search" in headers and "Threshold trade-off" in headers
    chart = app.button_group(key="compare_chart")
    assert chart.value == "ROC" and "Training curves" in chart.options
    chart.set_value("Training curves").run()
    assert not app.exception and any(s.label == "Metric" for s in app.selectbox)
    # The shipped models carry shift-check reports, so the chart draws them.
    chart.set_value("Shift check").run()
    assert app.selectbox(key="shift_metric").value == "screening specificity"
    assert not any("No shift check" in i.value for i in app.info)


def test_compare_page_draws_the_best_specificity_at_the_screening_sensitivity_from_the_saved_checks():
    import json

    from core.serving import registry

    app = page("compare")
    app.button_group(key="compare_chart").set_value("Shift check").run()
    app.selectbox(key="shift_metric").set_value("best specificity at sensitivity 0.98").run()
    assert not app.exception
    chart = json.loads(next(c for c in app.get("plotly_chart") if "under imitated machine" in c.proto.spec).proto.spec)
    default = registry.default_model_name()
    bars = {trace["name"]: trace["y"] for trace in chart["data"]}
    saved = registry.load_report(default, "shift")
    assert bars[default] == [r["specificity_at_screening_sensitivity"] for r in saved["shifts"]]


def test_home_shows_independent_figures_only_for_the_file_they_were_measured_on():
    from core.serving import registry

    card = registry.load_card(registry.default_model_name())
    app = page("home")
    checked = [c for c in registry.external_checks(card.name) if c["sha256"] == card.sha256]
    if checked:
        assert any(m.label == "AUC" and m.value == f"{checked[0]['auc']:.3f}" for m in app.metric)
    else:
        warning = next(w.value for w in app.warning if "no independent check yet" in w.value)
        # A new default is compared with what the model in use before did elsewhere.
        previous = (registry.external_checks(card.name) or registry.previous_default_checks())[0]
        assert previous["sha256"][:8] in warning and f"{1 - previous['screening']['specificity']:.0%}" in warning
    assert any("Site calibration" in i.value for i in app.info)
    # Another model's check is matched by its file: the shipped cnn_small is the file that was checked.
    small = registry.load_card("cnn_small")
    checks = registry.external_checks("cnn_small")
    assert {c["sha256"] for c in checks} == {small.sha256} and len(checks) == 2  # checked on two dates
    assert checks[0]["date"] > checks[1]["date"]  # newest first


def test_the_same_image_under_two_names_keeps_both_names():
    image = encode(xray_like(9, True, 256))
    app = _screened(page("screen"), [("left.jpeg", image, "image/jpeg"), ("right.jpeg", image, "image/jpeg")])
    names = [m.value.strip("*") for m in app.markdown if m.value.strip("*") in ("left.jpeg", "right.jpeg")]
    assert sorted(names) == ["left.jpeg", "right.jpeg"]


def test_home_says_which_withheld_figures_were_known_when_the_default_was_chosen():
    from core.serving import registry

    app = page("home")
    rule = registry.manifest()["chosen_by"]
    caption = next(c.value for c in app.caption if "Known when the rule was fixed" in c.value)
    assert rule["fixed"] in caption and "7d61d34" in caption
    card = registry.load_card(registry.default_model_name())
    known = any(c["sha256"] == card.sha256 and c["date"] <= rule["fixed"] for c in registry.external_checks(card.name))
    assert ("this file's own withheld figures among them" in caption) == known


def test_screen_page_shows_a_photographed_film_straightened_beside_the_photo():
    from dataclasses import replace

    from core.analysis.photos import PHOTO, STRONG_GLARE_STRENGTH, film_photo

    rng = np.random.default_rng(0)
    slanted = film_photo(xray_like(2, True, 512), replace(PHOTO, keystone=0.12), rng).data
    glare = film_photo(xray_like(3, True, 512), replace(PHOTO, glare=STRONG_GLARE_STRENGTH), rng).data
    app = _screened(page("screen"), [("film.jpeg", slanted, "image/jpeg"), ("glare.jpeg", glare, "image/jpeg")])
    assert any("Photo of a film, straightened" in c.value for c in app.caption)
    assert any("As sent" in image.captions for image in app.get("image"))
    assert any("hold the phone parallel to the film" in w.value for w in app.warning)  # usable: a warning
    assert any("glare" in w.value and "tilt the phone" in w.value for w in app.warning)  # unusable: refused
    assert len([m for m in app.metric if m.label == "Probability of pneumonia"]) == 1
    table = app.dataframe[0].value
    assert list(table["Input"]) == ["photo of a film, straightened"] * 2


def test_screen_page_asks_for_a_photo_flagged_under_uneven_light_to_be_taken_again_before_referral():
    from dataclasses import replace

    from core.analysis.photos import PHOTO, UNEVEN_LIGHT, film_photo
    from core.serving.predictor import Predictor
    from core.serving.quality import light_on_film

    rng = np.random.default_rng(0)
    uneven = film_photo(xray_like(0, True, 512), replace(PHOTO, uneven=UNEVEN_LIGHT), rng).data
    even = film_photo(xray_like(0, True, 512), PHOTO, rng).data
    default = Predictor.load()
    # Both flagged (a drawn chest with opacities), only the first with light on the film.
    screened = [default.screen(data) for data in (uneven, even)]
    assert [r.label for r in screened] == ["PNEUMONIA"] * 2
    assert [bool(light_on_film(r.warnings)) for r in screened] == [True, False]
    app = _screened(page("screen"), [("uneven.jpeg", uneven, "image/jpeg"), ("even.jpeg", even, "image/jpeg")])
    errors = [e.value for e in app.error]
    assert sum("take the photo again as the warning says, and refer if the new photo is flagged too" in e
               for e in errors) == 1
    assert sum("refer for clinical review" in e for e in errors) == 1
    summary = next(m.value for m in app.markdown if "flagged" in m.value)
    assert "(1 of them a photo with light on the film: take it again first)" in summary


def test_screen_page_shows_the_photo_guide_with_its_pictures_once_opened():
    app = page("screen")
    guide = next(e for e in app.expander if "Photographing a film" in e.label)
    assert not guide.get("image") and not guide.markdown  # nothing fetched until it is opened
    app.session_state["photo_guide"] = True
    app.run()
    guide = next(e for e in app.expander if "Photographing a film" in e.label)
    assert any("all four edges of the film" in m.value for m in guide.markdown)
    pictures = set(re.findall(r"photo-guide/([\w-]+\.png)", (ROOT / "docs" / "photographing-films.md").read_text()))
    assert len(pictures) >= 7 and len(guide.get("image")) == len(pictures)


def test_compare_ranks_models_by_their_own_files_figures_on_another_period():
    from core.serving import registry

    app = page("compare")
    table = app.dataframe[0].value.set_index("model")
    rank = next(c for c in table.columns if c.startswith("other period: best specificity"))
    assert f'rank by "{rank}"' in next(c.value for c in app.caption if "For use at another clinic" in c.value)
    # The checks of the current files (external_checks.json; the ensemble's of 2026-12-06, with intervals)
    ensemble = table.loc["cxrnet_framed_ensemble"]
    assert (ensemble[rank], ensemble["other period: AUC"]) == (0.859, "0.982 [0.971, 0.989]")
    assert ensemble["other period: screening sensitivity"] == "0.997 [0.992, 1.000]"
    assert ensemble["other period: screening specificity"] == "0.632 [0.567, 0.699]"
    assert ensemble["other-period check"].startswith("2026-12-06: withheld Kermany test split: 624 X-rays")
    small, default = table.loc["cnn_small"], table.loc["cxrnet_framed_det"]
    assert (small["other period: AUC"], small["other period: screening specificity"]) == ("0.926", "0.359")
    assert (default["other period: AUC"], default["validation AUC"]) == ("0.981", 0.991)
    assert small["validation AUC"] == 0.998  # the validation order is the other way round
    assert list(table[rank]) == sorted(table[rank], reverse=True)
    # Sizes in MB to one decimal, training time in whole minutes
    card = registry.load_card("cnn_small")
    assert small["file MB"] == round(card.file_bytes / 1e6, 1) and small["training min"] == round(
        card.training["seconds"] / 60)
    assert all(float(m).is_integer() for m in table["training min"])


def test_compare_says_not_checked_or_an_earlier_file_where_no_check_is_of_the_current_file(tmp_path, monkeypatch):
    import json
    import shutil

    import streamlit as st

    from core.serving import registry

    for path in registry.models_dir().glob("*.json"):
        shutil.copy(path, tmp_path)
    stored = json.loads((tmp_path / registry.EXTERNAL_CHECKS).read_text())
    stored["checks"] = [c for c in stored["checks"] if c["model"] != "cnn_small"]
    for check in stored["checks"]:
        if check["model"] == "mlp":
            check["sha256"] = "0" * 64  # as if mlp had been retrained since its checks
    (tmp_path / registry.EXTERNAL_CHECKS).write_text(json.dumps(stored))
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path))
    st.cache_data.clear()  # the pages' cached cards and checks are of the shipped folder
    try:
        table = page("compare").dataframe[0].value.set_index("model")
    finally:
        st.cache_data.clear()
    assert table.loc["cnn_small", "other-period check"] == "not checked"
    assert table.loc["mlp", "other-period check"] == "an earlier file"
    assert table.loc[["cnn_small", "mlp"], "other period: AUC"].isna().all()
    assert list(table.index[-2:]) == ["cnn_small", "mlp"]  # unranked, last
    assert table.loc["cxrnet_framed_ensemble", "other period: AUC"] == "0.982 [0.971, 0.989]"


def test_compare_roc_marks_each_checked_models_points_on_another_period_below_a_clear_title():
    import json

    app = page("compare")
    chart = json.loads(next(c for c in app.get("plotly_chart") if "ROC on validation" in c.proto.spec).proto.spec)
    crosses = {t["name"]: t for t in chart["data"] if t.get("mode") == "markers"}
    ensemble = crosses["cxrnet_framed_ensemble, other period"]
    assert ensemble["x"] == pytest.approx([1 - 0.632, 1 - 0.791]) and ensemble["y"] == [0.997, 0.992]
    assert any(t["name"] == "cxrnet_framed_ensemble (AUC 0.992; other period 0.982)" for t in chart["data"])
    # The legend sits at the foot of the figure, where the title cannot be
    legend = chart["layout"]["legend"]
    assert (legend["yref"], legend["y"], legend["yanchor"]) == ("container", 0, "bottom")


def test_home_says_in_counts_of_children_how_the_model_in_use_did_on_another_period():
    app = page("home")
    plain = [m.value for m in app.markdown]
    assert any("flags those that may show pneumonia" in m and "checked on X-rays of other children from another "
               "period" in m for m in plain)
    # The default's check of 2026-12-01: screening sensitivity 0.997, specificity 0.692
    assert any("flagged **997 of 1,000 children with pneumonia** and **31 of 100 healthy children**" in m
               for m in plain)
    # The engineering description only behind "Full model card"
    card_box = next(e for e in app.expander if e.label == "Full model card")
    assert sum("CLAHE" in m.value for m in card_box.markdown) == sum("CLAHE" in m for m in plain) == 1
    assert any(m.label == "screening specificity" and m.value == "0.692" for m in card_box.metric)
