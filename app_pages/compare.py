"""Model comparison: each model on another period beside its validation metrics, curves, calibration, thresholds,
training and top losses."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.analysis import data, evaluation, reports
from core.analysis.figures import lr_plot
from core.serving import registry
from core.serving.heatmap import overlay
from ui.common import (
    RANK_COLUMN,
    card_summary,
    cards,
    confusion_figure,
    current_check,
    line_figure,
    model_colour,
    other_period_row,
    predictor,
    report,
)

st.title("Model comparison")
st.caption("Each model on X-rays from another period (an independent check of its current file), beside its "
           "patient-level validation split (patients never seen in training, from the training hospital).")

METRICS = ("AUC", "accuracy", "sensitivity", "specificity", "precision", "F1", "ECE")
all_cards = cards()
names = [card.name for card in all_cards]
benchmark = {row["model"]: row for row in (registry.load_shared(registry.BENCHMARK) or {"rows": []})["rows"]}


def rounded(value: float | None, digits: int) -> float | int | None:
    """As many digits as the figure supports (whole numbers for 0); None stays None."""
    return None if value is None else round(value, digits or None)


def comparison_row(card) -> dict:
    """Model, its other-period figures, then validation and the card's facts, each rounded as shown."""
    summary = card_summary(card)
    bench = benchmark.get(card.name, {})
    validation_figures = {f"validation {key}": rounded(summary.pop(key), 3) for key in METRICS}
    latency = {key: rounded(bench.get(field), 0)
               for key, field in (("latency p50 ms", "p50_ms"), ("heat map ms", "explain_ms"))}
    return {"model": summary.pop("model"), **other_period_row(card.name), **validation_figures, **summary, **latency}


# Checked models first, best first by the column to rank by; then the rest, by name.
rows = sorted((comparison_row(card) for card in all_cards),
              key=lambda row: (row[RANK_COLUMN] is None, -(row[RANK_COLUMN] or 0.0), row["model"]))
st.dataframe(rows, hide_index=True, width="stretch",
             column_config={RANK_COLUMN: st.column_config.NumberColumn(format="%.3f"),
                            **{f"validation {k}": st.column_config.NumberColumn(format="%.3f") for k in METRICS},
                            "file MB": st.column_config.NumberColumn(format="%.1f"),
                            "parameters": st.column_config.NumberColumn(format="localized")})
st.caption(f"**For use at another clinic, rank by \"{RANK_COLUMN}\"**: on X-rays of another period, the share "
           "of healthy children a model spares once a threshold keeps 98% of pneumonia flagged, whichever threshold "
           "it ships with (a clinic sets its own: **Site calibration**). Validation figures are near their ceiling "
           "and ordered the models differently. Other-period figures carry [95% intervals over patients] where the "
           "check recorded them; \"not checked\": no independent check of any file of the model; \"an earlier "
           "file\": only a previous file of it was checked, and those figures do not carry over. Screening and "
           "balanced: the model's own operating points; validation metrics at the balanced point. Latency: "
           "`python -m core bench --save`; checks: `python -m core record-check`.")

chosen = st.multiselect("Models in the charts", names, default=names)
if not chosen:
    st.info("Choose at least one model for the charts.")
validation = {name: report(name, "validation") for name in chosen}
validation = {name: value for name, value in validation.items() if value}

# One chart at a time: every tab of st.tabs is drawn on each run, and a page of Plotly charts is
# slow to first show on a phone or a small server.
CHARTS = ["ROC", "Precision-recall", "Calibration", "Training curves", "Shift check"]
shown_chart = st.segmented_control("Chart", CHARTS, default=CHARTS[0], key="compare_chart") or CHARTS[0]
if shown_chart == "ROC":
    figure = line_figure("ROC on validation", "False positive rate (1 - specificity)", "Sensitivity", diagonal=True)
    for name, value in validation.items():
        roc = value["curves"]["roc"]
        check = current_check(name)[1]
        elsewhere = f"; other period {check['auc']:.3f}" if check else ""
        # One legend entry per model, its crosses with it: two per model crowded a phone's screen.
        figure.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", legendgroup=name,
                                    name=f"{name} (AUC {value['auc']:.3f}{elsewhere})",
                                    line={"color": model_colour(name)}))
        if check:
            points = [check["screening"], check["balanced"]]
            figure.add_trace(go.Scatter(
                x=[1 - p["specificity"] for p in points], y=[p["sensitivity"] for p in points], mode="markers",
                name=f"{name}, other period", legendgroup=name, showlegend=False,
                text=["screening point", "balanced point"],
                marker={"color": model_colour(name), "symbol": "x", "size": 10}))
    st.plotly_chart(figure, width="stretch")
    st.caption("Lines: validation. Crosses: where each model's screening and balanced points landed on X-rays of "
               "another period, from its current file's independent check.")
elif shown_chart == "Precision-recall":
    figure = line_figure("Precision-recall on validation", "Recall (sensitivity)", "Precision")
    for name, value in validation.items():
        pr = value["curves"]["pr"]
        figure.add_trace(go.Scatter(x=pr["recall"], y=pr["precision"], mode="lines", name=name,
                                    line={"color": model_colour(name)}))
    st.plotly_chart(figure, width="stretch")
elif shown_chart == "Calibration":
    figure = line_figure("Reliability diagram (validation)", "Predicted probability", "Observed share of pneumonia",
                         diagonal=True)
    for name, value in validation.items():
        bins = value["reliability"]
        figure.add_trace(go.Scatter(x=[b["mean_probability"] for b in bins], y=[b["fraction_positive"] for b in bins],
                                    mode="lines+markers", name=f"{name} (ECE {value['ece']:.3f})",
                                    line={"color": model_colour(name)}))
    st.plotly_chart(figure, width="stretch")
elif shown_chart == "Training curves":
    metric = st.selectbox("Metric", ["loss", "accuracy", "auc", "learning_rate"])
    figure = line_figure(f"{metric} per epoch", "epoch", metric)
    for name in chosen:
        history = report(name, "history")
        if not history or metric not in history:
            continue
        epochs = list(range(1, len(history[metric]) + 1))
        figure.add_trace(go.Scatter(x=epochs, y=history[metric], mode="lines+markers", name=f"{name} train",
                                    line={"color": model_colour(name)}))
        if f"val_{metric}" in history:
            figure.add_trace(go.Scatter(x=epochs, y=history[f"val_{metric}"], mode="lines+markers",
                                        line={"dash": "dash", "color": model_colour(name)},
                                        name=f"{name} validation"))
    if metric in ("loss", "learning_rate"):
        # One diverging epoch (a validation loss of 11) would flatten every other curve.
        figure.update_yaxes(type="log")
    st.plotly_chart(figure, width="stretch")
else:  # the shift check
    shift_metrics = {"screening specificity": "screening_specificity", "screening sensitivity": "screening_sensitivity",
                     "best specificity at sensitivity 0.98": "specificity_at_screening_sensitivity",
                     "balanced accuracy": "balanced_accuracy", "AUC": "auc", "calibration error (ECE)": "ece"}
    shown_metric = st.selectbox("Metric", list(shift_metrics), key="shift_metric")
    figure = go.Figure()
    for name in chosen:
        shifted = report(name, "shift")
        if shifted:
            figure.add_trace(go.Bar(x=[r["shift"] for r in shifted["shifts"]],
                                    y=[r.get(shift_metrics[shown_metric]) for r in shifted["shifts"]], name=name,
                                    marker={"color": model_colour(name)}))
    if figure.data:
        # Two title lines and the legend at the foot: on a phone one line was cut and a legend at the
        # side squeezed the bars.
        figure.update_layout(title=f"Validation {shown_metric}<br>under imitated machine differences",
                             barmode="group", yaxis={"title": shown_metric}, height=560,
                             margin={"l": 10, "r": 10, "t": 70, "b": 10},
                             legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0, "x": 0})
        st.plotly_chart(figure, width="stretch")
    else:
        st.info("No shift check is stored for the chosen models.")
    st.caption("Each validation image altered as another X-ray machine might deliver it (exposure, contrast, "
               "sharpness, noise, compression, resolution, framing), scored at the model's fixed thresholds. "
               "The best specificity at sensitivity 0.98 takes the threshold from the altered images themselves: "
               "how well the model ranks where screening works, whichever threshold it ships with. Where it lies far "
               "above the screening specificity, the shift moved the model's scores past its threshold, and a "
               "site profile can set the threshold again. From `python -m benchmarks.shift --save`.")
    levers = registry.load_shared("levers.json")
    if levers:
        proxy = levers["proxy"]
        st.markdown(f"**Lever ablation** ({proxy['arch']} at {proxy['size']} px, {proxy['epochs']} epochs, one lever "
                    "at a time; `python -m benchmarks.levers --save`)")
        st.dataframe([{"lever": r["lever"], "validation AUC": r["auc"], "accuracy": r["accuracy"], "ECE": r["ece"],
                       "AUC, lung-field crops": r.get("framing_mean_auc"),
                       "accuracy, lung-field crops": r.get("framing_mean_balanced_accuracy"),
                       "mean AUC under shift": r["mean_auc"], "mean accuracy under shift": r["mean_balanced_accuracy"],
                       "worst screening specificity": r["worst_screening_specificity"],
                       "worst screening sensitivity": r["worst_screening_sensitivity"],
                       "pneumonia heat inside the thorax": r.get("lung_focus")} for r in levers["rows"]],
                     hide_index=True, width="stretch")

st.subheader("Learning-rate finder and hyper-parameter search")
st.caption("From `python -m core lr-find --arch NAME --json models/NAME.lr_find.json` and "
           "`python -m core tune --arch NAME` (its results table copied to models/NAME.tune.json).")
shown = False
for name in chosen:
    found, search = report(name, "lr_find"), report(name, "tune")
    shown = shown or bool(found or search)
    if found:
        st.plotly_chart(lr_plot(found), width="stretch")
        st.caption(f"{name}: suggested {found['suggestion']:.2e} ({found['method']}); the card's rate came from: "
                   f"{next(c for c in all_cards if c.name == name).training['hyperparameters_from']}.")
    if search:
        st.markdown(f"**{name}**: search trials, best validation AUC first")
        st.dataframe(search, hide_index=True, width="stretch")
if not shown:
    st.info("No finder or search results are stored for the chosen models.")

st.subheader("Threshold trade-off")
focus = st.selectbox("Model", names, index=names.index(registry.default_model_name()), key="threshold_model")
value = report(focus, "validation") or {}
if "predictions" in value:
    labels = np.array(value["predictions"]["labels"])
    probabilities = np.array(value["predictions"]["probabilities"])
    card = next(c for c in all_cards if c.name == focus)
    threshold = st.slider("Threshold", 0.0, 1.0, float(card.operating_points["balanced"]), 0.005)
    at = evaluation.metrics_at(labels, probabilities, threshold)
    columns = st.columns(4)
    for column, key in zip(columns, ("sensitivity", "specificity", "accuracy", "precision")):
        column.metric(key, f"{at[key]:.3f}")
    st.plotly_chart(confusion_figure(at["confusion"], f"{focus} at threshold {threshold:.3f}"), width="stretch")
    st.caption("Operating points from the card: " + ", ".join(
        f"{k} = {v:.3f}" for k, v in card.operating_points.items()))
else:
    st.info("This model's validation report holds no per-image predictions; refresh it with "
            f"`python -m core evaluate --split validation --model {focus} --save-report`.")

st.subheader("Evaluate on a data folder")
folder = st.text_input("Data folder (Kaggle layout)", str(data.default_data_dir() or ""))
available = data.available_splits(folder) if folder else []
# "validation" is the patient-level hold-out of train: offered only where there is a train split.
splits = (["validation"] if "train" in available else []) + available
if folder and not available:
    st.warning(f"No NORMAL/PNEUMONIA split folders under {folder}.")
elif folder:
    left, right = st.columns(2)
    split = left.selectbox("Split", splits, help="validation: the patient-level hold-out of train")
    top_count = right.number_input("Top losses to show", 0, 48, 8)
    if st.button("Evaluate", type="primary"):
        model = predictor(focus)
        try:
            with st.spinner(f"Scoring {split} with {focus}…"):
                scored = reports.score_split(model, folder, split)
                record = reports.evaluate(model, scored, split, False)
        except (FileNotFoundError, OSError, ValueError) as exc:
            st.error(f"Cannot evaluate {split} of {folder}: {exc}")
            st.stop()
        st.dataframe([{k: record[k] for k in ("model", "n", "accuracy", "sensitivity", "specificity", "precision",
                                              "f1", "auc", "ece")}], hide_index=True, width="stretch")
        st.plotly_chart(confusion_figure(record["confusion"], f"{focus} on {split} (balanced)"), width="stretch")
        if top_count:
            st.markdown(f"**Top {top_count} losses**: the images the model got most wrong")
            columns = st.columns(4)
            for i, worst in enumerate(reports.top_losses(scored, int(top_count))):
                index = worst["index"]
                heat = model.heatmap(scored.inputs[index])
                image = overlay((scored.inputs[index][..., 0] * 255).astype(np.uint8), heat)
                columns[i % 4].image(image, width="stretch", caption=(
                    f"{worst['label']}, p={worst['probability']:.2f}, loss {worst['loss']:.2f}: "
                    f"{worst['file'].rsplit('/', 1)[-1]}"))
