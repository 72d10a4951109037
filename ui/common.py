"""Shared UI pieces: cached models and reports, pickers and Plotly figures."""
from __future__ import annotations

import importlib
import re
import threading
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.analysis import checks
from core.analysis.evaluation import SCREENING_SENSITIVITY
from core.analysis.explain import LayerActivations
from core.serving import registry
from core.serving.card import ModelCard
from core.serving.predictor import Predictor
from core.serving.settings import PROJECT_ROOT
from core.serving.site import SiteProfile

DISCLAIMER = ("**A screening aid, not a diagnosis.** It flags chest X-rays that may show pneumonia "
              "so that a clinician looks at them first; a clinician makes the diagnosis.")
# What a probability means, where it is shown: calibrated at the training hospital, it overstated
# pneumonia for healthy children of another period (issue #32: X-rays given 70-80% there were
# pneumonia about a third of the time).
PROBABILITY_HELP = ("Calibrated on validation X-rays of the training hospital: there, of the X-rays given about "
                    "this value, about this share showed pneumonia. On X-rays of another hospital or period it can "
                    "be far off (on the withheld period, healthy children often scored 70-80%). Act on the flag at "
                    "the threshold, not on the number; site calibration refits both on local X-rays.")
OPERATING_POINT_HELP = ("screening: misses at most 2% of pneumonia (on the data its thresholds were set on), "
                        "at the cost of more false alarms. balanced: the best sum of sensitivity and specificity.")


PHOTO_GUIDE = PROJECT_ROOT / "docs" / "photographing-films.md"
# What a picture's kind is called where a result is shown.
INPUT_KINDS = {"digital": "digital file", "dicom": "DICOM file", "photo": "photo of a film, straightened",
               "screenshot": "screenshot, cropped to the X-ray"}
_MARKDOWN_IMAGE = re.compile(r"^!\[(?P<caption>[^\]]*)\]\((?P<path>[^)]+)\)\s*$")


def show_document(path: Path) -> None:
    """A page of docs/ in the app, its pictures included: the guide has one source, read here and on GitHub."""
    text: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        picture = _MARKDOWN_IMAGE.match(line)
        if picture is None:
            text.append(line)
            continue
        st.markdown("\n".join(text))
        text = []
        st.image(str(path.parent / picture["path"]), caption=picture["caption"])
    st.markdown("\n".join(text))


# What the analyst pages import on their first visit (scikit-learn, pandas for tables, the reports):
# seconds on a small server, which the first analyst to open a page would otherwise wait for.
ANALYST_MODULES = ("pandas", "sklearn.metrics", "sklearn.linear_model", "core.analysis.evaluation",
                   "core.analysis.reports", "core.analysis.site_calibration", "core.analysis.figures",
                   "core.learning.download")


# Not at once: a clinic's first screening, seconds after the server starts, would share the CPU with it.
WARM_UP_DELAY_S = 20.0


def _import_analyst_modules() -> None:
    time.sleep(WARM_UP_DELAY_S)
    for module in ANALYST_MODULES:
        importlib.import_module(module)


@st.cache_resource
def warm_analyst_pages() -> threading.Thread:
    """Import ANALYST_MODULES in the background, once per server, WARM_UP_DELAY_S after its first
    page (none of them loads TensorFlow)."""
    thread = threading.Thread(target=_import_analyst_modules, name="warm-analyst-pages", daemon=True)
    thread.start()
    return thread


@st.cache_resource(show_spinner="Loading the model…")
def predictor(name: str) -> Predictor:
    """One Predictor per model for the whole server: loading is slow, predicting is thread-safe."""
    return Predictor.load(name)


@st.cache_resource(show_spinner="Reading the model's layers…")
def layer_activations(name: str) -> LayerActivations:
    """Per-layer activation maps of one model's ONNX export, one session for the whole server.
    Raises ExplanationUnavailable for a model without spatial layers."""
    return LayerActivations(predictor(name))


@st.cache_resource
def site_predictor(site_profile: bytes, site_name: str) -> Predictor:
    """The profile's model at the profile's operating points, sharing the loaded model.
    Raises SiteProfileError for a profile that is edited or does not fit the model file."""
    site = SiteProfile.from_bytes(site_profile, site_name)
    return predictor(site.model).with_site(site)


def format_probability(probability: float) -> str:
    """A percentage that never claims certainty: "> 99.9%" and "< 0.1%" at the ends."""
    if probability > 0.999:
        return "> 99.9%"
    if probability < 0.001:
        return "< 0.1%"
    return f"{probability:.1%}"


def keep(key: str, default):
    """Restore a widget's value from the last visit: Streamlit forgets the state of widgets
    on pages that are not shown, so values also live under a key no widget owns."""
    saved = f"saved_{key}"
    st.session_state.setdefault(saved, default)
    st.session_state[key] = st.session_state[saved]
    return {"key": key, "on_change": _save, "args": (key,)}


def _save(key: str) -> None:
    st.session_state[f"saved_{key}"] = st.session_state[key]


@st.cache_data
def cards() -> list[dict]:
    return registry.cards()


@st.cache_data
def default_model() -> str:
    return registry.default_model_name()


@st.cache_data
def default_rule() -> dict | None:
    """How the manifest's default was chosen, and what was known then."""
    return registry.manifest().get("chosen_by")


@st.cache_data
def report(name: str, kind: str):
    return registry.load_report(name, kind)


@st.cache_data
def external_checks(name: str) -> list[dict]:
    return registry.external_checks(name)


@st.cache_data
def current_check(name: str) -> tuple[str, dict | None]:
    """The newest independent check of the model's current file, or why there is none."""
    return checks.current_check(registry.load_card(name))


@st.cache_data
def previous_default_checks() -> list[dict]:
    return registry.previous_default_checks()


@st.cache_data
def shipped_profile() -> dict | None:
    return registry.load_shared(registry.PROFILE)


def model_picker(label: str = "Model", key: str = "model") -> str:
    names = [card.name for card in cards()]
    default = default_model()
    return st.selectbox(label, names, index=names.index(default), key=key,
                        format_func=lambda n: f"{n} (default)" if n == default else n)


def card_summary(card: ModelCard) -> dict:
    """The card's headline facts as a flat row."""
    validation, training, spec = card.validation, card.training, card.spec
    return {
        "model": card.name,
        "AUC": validation["auc"], "accuracy": validation["accuracy"], "sensitivity": validation["sensitivity"],
        "specificity": validation["specificity"], "precision": validation["precision"], "F1": validation["f1"],
        "ECE": validation.get("ece"),
        "input": f"{spec.size} px" + (" + CLAHE" if spec.clahe else "")
                 + (f" + standard frame ({spec.frame_side:.0%})" if spec.frame else "")
                 + (" + equalised" if spec.equalise else ""),
        "parameters": card.parameters, "file MB": round(card.file_bytes / 1e6, 1),
        "training min": round(training["seconds"] / 60), "hardware": training["hardware"],
        # Long text last, so the metrics stay in view on narrow screens.
        "architecture": card.summary,
    }


# The column to rank models by for use at another clinic: on another period, the specificity the
# model's ranking allows at the screening target, whatever threshold it ships with (a clinic sets
# its own by site calibration); validation is saturated and ordered the shipped models the other way.
RANK_COLUMN = f"other period: best specificity at sensitivity {SCREENING_SENSITIVITY}"
OTHER_PERIOD = {"other period: AUC": ("auc", "auc_95ci"),
                "other period: balanced accuracy": ("balanced", "accuracy"),
                "other period: screening sensitivity": ("screening", "sensitivity"),
                "other period: screening specificity": ("screening", "specificity")}


def with_interval(value: float, interval: list[float] | None) -> str:
    """A figure and its 95% interval, to three decimals as the checks store them."""
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _other_period_figure(check: dict, first: str, second: str) -> str:
    if first == "auc":
        return with_interval(check["auc"], check.get(second))
    point = check[first]
    return with_interval(point[second], point.get("95ci", {}).get(second))


def other_period_row(name: str) -> dict:
    """A model's figures on another period, from its current file's own check only; the check
    column says where there is none ("not checked", or only "an earlier file" was)."""
    status, check = current_check(name)
    if check is None:
        return {RANK_COLUMN: None, **dict.fromkeys(OTHER_PERIOD), "other-period check": status}
    return {RANK_COLUMN: check.get(checks.BEST_SPECIFICITY),
            **{column: _other_period_figure(check, *keys) for column, keys in OTHER_PERIOD.items()},
            "other-period check": f"{check['date']}: {check['data']}"}


def out_of(share: float, children: int) -> str:
    """A share as a count of children, as a health worker reads it: 0.997 of 1000 -> "997 of 1,000"."""
    return f"{round(share * children):,} of {children:,}"


def plain_figures(check: dict) -> str:
    """An independent check at the screening point, in counts of children."""
    screening = check["screening"]
    return (f"On X-rays from another period it flagged **{out_of(screening['sensitivity'], 1000)} children with "
            f"pneumonia** and **{out_of(1 - screening['specificity'], 100)} healthy children**. A flag means that "
            "a clinician should look at that X-ray first, not that the child has pneumonia; a clinician decides.")


def gray_image(array: np.ndarray) -> np.ndarray:
    """Arrays in [0, 1] or uint8 as uint8 for st.image."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    return array.squeeze()


def line_figure(title: str, x_title: str, y_title: str, diagonal: bool = False) -> go.Figure:
    figure = go.Figure()
    if diagonal:
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "gray"},
                                    name="chance" if x_title.startswith("False") else "perfect calibration"))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=480,
                         margin={"l": 10, "r": 10, "t": 50, "b": 10},
                         # At the figure's foot, below the axis titles: above the plot, a legend of many
                         # models wrapped into rows over the title; there Plotly grows the margin to fit it.
                         legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0, "x": 0})
    return figure


# One colour per model on every chart and tab (Plotly's qualitative palette, in name order).
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF",
           "#FECB52")


def model_colour(name: str) -> str:
    names = sorted(registry.model_names())
    return PALETTE[names.index(name) % len(PALETTE)] if name in names else "#444444"


def confusion_figure(matrix: list[list[int]], title: str) -> go.Figure:
    figure = go.Figure(go.Heatmap(z=matrix, x=["NORMAL", "PNEUMONIA"], y=["NORMAL", "PNEUMONIA"],
                                  text=matrix, texttemplate="%{text}", colorscale="Blues", showscale=False))
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", height=300,
                         yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure
