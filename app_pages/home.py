"""Home: what the tool is for, the model in use, and what is known of its quality elsewhere."""
import streamlit as st

from ui.common import (
    DISCLAIMER,
    card_summary,
    cards,
    current_check,
    default_model,
    default_rule,
    external_checks,
    plain_figures,
    previous_default_checks,
)

st.title("Chest X-ray pneumonia screening")
st.markdown(DISCLAIMER)
st.markdown(
    "For health workers in clinics: upload paediatric chest X-rays (JPEG, PNG or DICOM) on the **Screen** page "
    "and get a triage list: the images that may show pneumonia first, each with its probability and a heat map "
    "of where the model looked. Images are processed in memory and never stored.\n\n"
    "For analysts: **Site calibration** sets a clinic's own thresholds from its own labelled X-rays; the "
    "**Dataset explorer** shows the training data, **Model comparison** sets the models side by side, and "
    "**Explain** opens Grad-CAM and activation maps layer by layer.")

name = default_model()
card = next(c for c in cards() if c.name == name)
status, check = current_check(name)
st.subheader("The model in use")
trained_on = sum(card.training["counts"]["train"].values())
st.markdown(f"It looks at a child's chest X-ray and flags those that may show pneumonia; it learned from "
            f"{trained_on:,} X-rays of one hospital and "
            + ("was then checked on X-rays of other children from another period, which it had never seen."
               if check else "has not yet been checked on X-rays from another hospital or period."))
if check:
    st.markdown(plain_figures(check))
else:
    message = ("This model file has **no independent check yet**: until one is run, its quality on another "
               "hospital's X-rays is unknown.")
    # Another file of this model, else the model in use before: the nearest figures there are.
    checks = external_checks(name)
    earlier = checks or [c for c in previous_default_checks() if c["sha256"] != card.sha256]
    if earlier:
        previous = earlier[0]
        source = (f"The previous {name} file ({previous['sha256'][:8]}…)" if checks else
                  f"The previous default model ({previous['model']}, file {previous['sha256'][:8]}…)")
        message += (f" {source} was checked on {previous['data']}: "
                    f"AUC {previous['auc']:.3f}, and at the screening point sensitivity "
                    f"{previous['screening']['sensitivity']:.3f} but specificity "
                    f"{previous['screening']['specificity']:.3f}: "
                    f"{1 - previous['screening']['specificity']:.0%} of healthy children were referred.")
    st.warning(message)
st.info("Thresholds set at the training hospital do not carry over to other machines and populations. "
        "A clinic should set its own on a few hundred of its own labelled X-rays: **Site calibration**.")

with st.expander("Full model card"):
    st.markdown(f"**{name}**: {card.summary}. File sha256 {card.sha256[:12]}…")
    rule = default_rule()
    if rule:
        own = [c for c in external_checks(name) if c["sha256"] == card.sha256 and c["date"] <= rule["fixed"]]
        st.caption(f"Chosen by the rule fixed on {rule['fixed']} ({rule['rule']}), which reads {rule['reads']}. "
                   f"Known when the rule was fixed: {rule['known_when_fixed']}; "
                   + ("this file's own withheld figures among them." if own else
                      "none of them of this file, which was trained afterwards."))
    if check:
        st.markdown("**On X-rays from another hospital period** (independent check)")
        columns = st.columns(4)
        columns[0].metric("AUC", f"{check['auc']:.3f}")
        columns[1].metric("accuracy (balanced point)", f"{check['balanced']['accuracy']:.3f}")
        columns[2].metric("screening sensitivity", f"{check['screening']['sensitivity']:.3f}")
        columns[3].metric("screening specificity", f"{check['screening']['specificity']:.3f}")
        st.caption(f"{check['data']}; {check['by']}, {check['date']}.")
    st.markdown("**On validation X-rays of other patients from the training hospital** (an upper bound, not the "
                "quality to expect in a clinic)")
    summary = card_summary(card)
    columns = st.columns(4)
    for column, key in zip(columns, ("AUC", "accuracy", "sensitivity", "specificity")):
        column.metric(f"validation {key}", f"{summary[key]:.3f}")
    spread = card.validation.get("screening_threshold_spread")
    st.caption(f"Trained on {trained_on} images, validated on {card.validation['n']} images of other patients; "
               "operating points: " + ", ".join(f"{k} {v:.3f}" for k, v in card.operating_points.items()) + "."
               + (f" On other draws of the validation patients the screening rule would have put its threshold "
                  f"between {spread['2.5%']:.2f} and {spread['97.5%']:.2f} (95% of draws; median "
                  f"{spread['50%']:.2f}): one more reason for a clinic to calibrate its own." if spread else ""))
    st.json(card.to_dict(), expanded=False)
