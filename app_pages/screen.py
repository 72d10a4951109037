"""Screen: upload X-rays and get a triage list: flagged images first, each verdict beside its own image."""
import hashlib
from dataclasses import replace

import numpy as np
import streamlit as st

from core.serving import registry, screening
from core.serving.heatmap import overlay
from core.serving.imaging import ImageError, decode_image, is_dicom
from core.serving.quality import RETAKE_BEFORE_REFERRAL
from core.serving.settings import OPERATING_POINTS
from core.serving.site import SiteProfileError, shipped_profiles
from ui import on_device
from ui.common import (
    DISCLAIMER,
    INPUT_KINDS,
    OPERATING_POINT_HELP,
    PHOTO_GUIDE,
    PROBABILITY_HELP,
    default_model,
    format_probability,
    keep,
    predictor,
    show_document,
    site_predictor,
)

SHIPPED = "Shipped operating points (training hospital)"
UPLOAD_PROFILE = "Upload a site profile…"
HEATMAP_CAPTION = ("Heat map: red areas raised the pneumonia score most, blue areas least; parts left "
                   "uncoloured were not read by the model. It shows where the model looked, not a finding.")
# The overlay's colour scale, low to high, shown once above the cards.
COLOUR_SCALE = overlay(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (10, 1)),
                       np.tile(np.linspace(0, 1, 256, dtype=np.float32), (10, 1)), 1.0)
CACHE_LIMIT = 200  # screened images kept per session (results only, never the uploads)
ON_DEVICE = "Screen on this device: nothing is uploaded"
SERVER = "Upload to the server"

st.title("Screen chest X-rays")
st.caption(DISCLAIMER)


def choose_site() -> tuple[bytes | None, str]:
    """(site profile bytes or None, its name), from the sites folder or an upload."""
    shipped = {path.stem: path for path in shipped_profiles()}
    options = [SHIPPED, *shipped, UPLOAD_PROFILE]
    choice = st.selectbox("Operating points", options, **keep("site_choice", SHIPPED),
                          help="A site profile holds thresholds set on your own clinic's X-rays "
                               "(python -m core calibrate-site, or the Site calibration page).")
    if choice in shipped:
        return shipped[choice].read_bytes(), choice
    if choice == UPLOAD_PROFILE:
        upload = st.file_uploader("Site profile (JSON)", type=["json"], key="site_upload")
        if upload:
            st.session_state["site_profile"] = (upload.getvalue(), upload.name.rsplit(".", 1)[0])
        return st.session_state.get("site_profile", (None, ""))
    return None, ""


with st.expander("Settings", expanded=False):
    site_bytes, site_name = choose_site()
    operating_point = st.radio("Operating point", OPERATING_POINTS, horizontal=True, help=OPERATING_POINT_HELP,
                               **keep("operating_point", OPERATING_POINTS[0]))
    opacity = st.slider("Heat-map opacity", 0.0, 1.0, **keep("opacity", 0.4), step=0.05)
    maps_for_negatives = st.toggle("Show heat maps on images not flagged", **keep("maps_for_negatives", False))
    model_name = default_model()
    if st.toggle("Advanced: screen with another model", **keep("other_model", False),
                 help="For analysts comparing models. Models disagree on the same X-ray; health workers "
                      "should use the default, which is the one validated for screening."):
        names = registry.model_names()
        model_name = st.selectbox("Model", names, **keep("model_choice", model_name))

try:
    model = site_predictor(site_bytes, site_name) if site_bytes else predictor(model_name)
except SiteProfileError as exc:
    st.error(f"Site profile refused: {exc}. The shipped operating points are used instead.")
    model = predictor(model_name)

if model.site:
    counts = model.site.content["counts"]
    source = (f"site profile **{model.site.name}** ({counts['NORMAL'] + counts['PNEUMONIA']} local X-rays, "
              f"made {model.site.content['created'][:10]})")
else:
    source = "the model card (validation at the training hospital; see Home for other periods)"
st.caption(f"Model **{model.name}** · {operating_point} threshold "
           f"**{model.operating_points[operating_point]:.3f}** from {source}.")



def _picked() -> None:
    st.session_state["screen_where_picked"] = True
    st.session_state["saved_screen_where"] = st.session_state["screen_where"]


def server_rows(batch: dict) -> dict[int, screening.ScreeningRow]:
    """The rows of this on-device batch's handed files screened on the server since, by index (results
    only: nothing of their bytes is kept)."""
    kept = st.session_state.get("handed_rows")
    if not kept or kept["batch"] != batch.get("batch"):
        kept = st.session_state["handed_rows"] = {"batch": batch.get("batch"), "rows": {}}
    return kept["rows"]


def choose_where() -> tuple[str, object]:
    """On this device where the browser passed its self-test (offered first), else the server; and the
    mounted component (always mounted, so that its self-test runs and its state lives)."""
    state = st.session_state.get(on_device.COMPONENT_KEY) or {}
    status = state.get("status") or {}
    batch = state.get("results") or {}
    # Offered first until the browser's self-test says otherwise (the component's input waits for it);
    # the options stay the same meanwhile, so that the radio and the component are not drawn anew.
    options = [SERVER] if status.get("phase") == "off" else [ON_DEVICE, SERVER]
    # Until the user picks one, the first offered is chosen.
    # Files already given to the server's uploader keep the server chosen.
    picked = st.session_state.get("screen_where_picked") or st.session_state.get("server_uploads")
    if not picked or st.session_state.get("saved_screen_where") not in options:
        st.session_state["saved_screen_where"] = options[0]
    st.session_state["screen_where"] = st.session_state["saved_screen_where"]
    where = st.radio("Where to screen", options, horizontal=True, key="screen_where", on_change=_picked,
                     help="On this device, the X-rays are read in this browser and only the results reach the "
                          "server. Uploaded, they are screened on the server, in memory only.")
    missing = status.get("missing") if status.get("phase") == "need" else None
    handed = None
    if batch.get("rows") and batch.get("batch") != st.session_state.get("device_batch_superseded"):
        screened = server_rows(batch)
        # The user's click sent the handed files (a one-shot trigger): screened here, before the component
        # is drawn, so that its offer names only the files still waiting, whichever path is chosen now.
        uploads = on_device.handed_uploads(state.get("upload"), batch)
        if uploads:
            with st.spinner("Screening on the server…"):
                for index, name, data in uploads:
                    screened[index] = screen_upload(name, data)
        rows = batch["rows"]
        handed = {"batch": batch.get("batch"), "note": on_device.handed_note(rows, screened),
                  "waiting": [i for i, row in enumerate(rows) if row.get("status") == "server" and i not in screened],
                  "run": st.session_state.setdefault("screen_runs", 0)}
    st.session_state["screen_runs"] = st.session_state.get("screen_runs", 0) + 1
    try:
        mounted = on_device.screen(on_device.component_data(model, missing, where == ON_DEVICE, handed))
    except (ValueError, FileNotFoundError) as exc:  # a model without an ONNX export, no X-ray check
        st.caption(f"Screening on this device is not available for this model: {exc}.")
        return SERVER, None
    if status.get("phase") == "off":
        st.caption(f"Screening on this device is not available in this browser: {status.get('reason')}.")
    elif not status.get("ok"):
        st.caption("Checking whether this browser can screen on the device…")
    return where, mounted


def screen_upload(name: str, data: bytes) -> screening.ScreeningRow:
    """Screened once per image and model file: another operating point or site profile rescores the
    stored raw output, and display controls only redraw."""
    key = (hashlib.sha256(data).hexdigest(), model.card.sha256)
    cache = st.session_state.setdefault("screen_cache", {})
    if key not in cache:
        if len(cache) >= CACHE_LIMIT:
            cache.pop(next(iter(cache)))
        cache[key] = screening.screen_bytes(model, name, data, operating_point, heatmap=True)
    return replace(cache[key], file=name).rescored(model, operating_point)  # one image may come under two names


def rescored_batch(rows: list[screening.ScreeningRow]) -> list[screening.ScreeningRow]:
    """The last batch at the points now chosen, without screening it again; rows of another model
    file (chosen since) are kept as they were, and the page says so."""
    kept = []
    for row in rows:
        try:
            kept.append(row.rescored(model, operating_point))
        except ValueError:
            kept.append(row)
    if any(row.result and row.result.model_sha256 != model.card.sha256 for row in kept):
        st.warning(f"Part of your last batch was screened with another model than {model.name}: its results keep "
                   "their own thresholds. Upload the images again to screen them with this model.")
    return kept


def device_row(browser_row: dict) -> screening.ScreeningRow:
    """One file's row from the browser's numbers; one that cannot be read back is named, and the batch goes on."""
    try:
        return on_device.row_from(browser_row, model, operating_point)
    except (KeyError, TypeError, ValueError):
        return on_device.OnDeviceRow(str(browser_row.get("file", "")), "error", model.name,
                                     "the browser's result for this file could not be read: screen it again")


def on_device_rows(mounted) -> list[screening.ScreeningRow] | None:
    """A batch screened in the browser, as rows, its handed files' from the server once the user has
    uploaded them there, when it is new since last shown; None otherwise. A batch once shown is the page's
    last batch: rescored from there at other points, and not put back over a batch screened after it
    (the component keeps its last results while the server path is used)."""
    batch = (mounted.results if mounted is not None else None) or {}
    if not batch.get("rows") or batch.get("batch") == st.session_state.get("device_batch_superseded"):
        return None
    screened = server_rows(batch)
    shown = st.session_state.get("device_batch_shown")
    if shown == [batch.get("batch"), sorted(screened)]:
        return None
    server = dict(zip(screened, rescored_batch(list(screened.values()))))
    if shown and shown[0] == batch.get("batch") and st.session_state.get("last_batch"):
        # Handed files of the batch shown screened since: their rows replace theirs, the rest stay as shown.
        return [server.get(index, row) for index, row in enumerate(st.session_state["last_batch"])]
    return [server[index] if index in server else device_row(row) for index, row in enumerate(batch["rows"])]


def device_batch() -> int | None:
    """The number of the browser's last batch, if any."""
    return ((st.session_state.get(on_device.COMPONENT_KEY) or {}).get("results") or {}).get("batch")


where, mounted = choose_where()
# The batch summary goes above the upload list, which grows with every file (a phone's whole screen).
summary_area = st.container()
uploads = None
if where == SERVER:
    uploads = st.file_uploader("Chest X-rays (JPEG, PNG or DICOM)", type=["jpg", "jpeg", "png", "dcm", "dicom"],
                               accept_multiple_files=True, key="server_uploads",
                               help="Processed in memory only: nothing you upload is stored or logged. A phone "
                                    "photo of a film or a screenshot of a viewer works too.")
# Drawn only when opened: its seven pictures, fetched on every visit, held the on-device component's
# files up behind them (a browser opens six connections to a server), 0.4 s of a second visit.
photo_guide = st.expander("Photographing a film? How to take a photo that can be screened", key="photo_guide",
                          on_change="rerun")
if photo_guide.open:
    with photo_guide:
        show_document(PHOTO_GUIDE)
device_rows = on_device_rows(mounted) if where == ON_DEVICE else None


if device_rows:
    rows = device_rows
    # Stored together: a batch marked shown is the page's last batch.
    st.session_state["last_batch"] = rows
    st.session_state["last_batch_dicom"] = {}
    st.session_state["device_batch_shown"] = [device_batch(), sorted(server_rows(mounted.results))]
elif uploads:
    with st.spinner("Screening…"):
        rows = [screen_upload(upload.name, upload.getvalue()) for upload in uploads]
    # Results (not the uploads) survive a visit to another page. The browser's batch is put aside for good:
    # it does not come back over this one, nor does its offer to upload handed files.
    st.session_state["last_batch"] = rows
    st.session_state["last_batch_dicom"] = {u.name: u.getvalue() for u in uploads if is_dicom(u.getvalue())}
    st.session_state["device_batch_superseded"] = device_batch()
elif st.session_state.get("last_batch"):
    rows = rescored_batch(st.session_state["last_batch"])
    left, right = st.columns([3, 1])
    left.info(f"Your last batch ({len(rows)} images). Choose images to screen a new batch.")
    if right.button("Clear results"):
        st.session_state.pop("last_batch")
        st.session_state.pop("last_batch_dicom", None)
        st.session_state["device_batch_superseded"] = device_batch()
        st.rerun()
else:
    st.info("Choose one or more chest X-rays to screen them.")
    st.stop()

triage = screening.Triage.of(rows)
with summary_area:
    st.subheader("Summary")
    st.markdown(triage.summary() + ".")
    if triage.flagged or maps_for_negatives:
        st.image(COLOUR_SCALE, caption="Heat-map colours: blue, least weight for pneumonia → red, most", width=260)


def show_patient_tags(data: bytes, key: str) -> None:
    """DICOM patient details only on an explicit request, never in any export."""
    if st.toggle("Show patient details from the DICOM file", key=key):
        try:
            st.json(decode_image(data).private_tags)
        except ImageError as exc:
            st.error(str(exc))


def result_card(row: screening.ScreeningRow, index: int) -> None:
    """The verdict above (phone) or beside (desktop) its own image."""
    with st.container(border=True):
        verdict, picture = st.columns([2, 3])
        with verdict:
            st.markdown(f"**{row.file}**")
            if row.status != "ok":
                (st.warning if row.status == "rejected" else st.error)(f"Not screened: {row.message}")
                return
            result = row.result
            if result.warnings:
                st.warning("**Result may be unreliable:** " + "; ".join(result.warnings))
            if row.retake_first:
                st.error(f"**Possible pneumonia**, but {RETAKE_BEFORE_REFERRAL}.")
            elif row.flagged:
                st.error("**Possible pneumonia**: refer for clinical review.")
            elif result.warnings:  # no reassuring green for a result that cannot be relied on
                st.info("**No pneumonia flagged**, but see the warning above: repeat or review the X-ray.")
            else:
                st.success("**No pneumonia flagged.**")
            st.metric("Probability of pneumonia", format_probability(row.probability), help=PROBABILITY_HELP)
            st.caption(f"{row.operating_point} threshold {row.threshold:.3f} · model {row.model}"
                       + (f" · site {result.site}" if result.site else "") + f" · {result.timings_ms['total']:.0f} ms")
            dicom = st.session_state.get("last_batch_dicom", {}).get(row.file)
            if dicom:
                show_patient_tags(dicom, key=f"tags-{index}")
        with picture:
            if isinstance(row, on_device.OnDeviceRow):  # drawn in the browser, which kept the pixels
                heat = bool(row.flagged or maps_for_negatives)
                on_device.picture(row.picture_id, heat, opacity, HEATMAP_CAPTION if heat else
                                  "The X-ray as screened (heat map: see Settings)", key=f"picture-{row.picture_id}")
                return
            screened = picture
            if result.picture is not None:  # a photo or a screenshot: what was sent, beside what was screened
                st.caption(f"**{INPUT_KINDS[result.input_kind].capitalize()}**: as sent (left) and as screened.")
                sent, screened = st.columns(2)
                sent.image(result.picture, caption="As sent", width="stretch")
            if (row.flagged or maps_for_negatives) and result.heatmap is not None:
                screened.image(overlay(result.image, result.heatmap, opacity, result.frame), caption=HEATMAP_CAPTION,
                               width="stretch")
            else:
                screened.image(result.image, caption="The X-ray as screened (heat map: see Settings)", width="stretch")


for index, row in enumerate(triage.ordered):
    result_card(row, index)

with st.expander("Table and CSV download"):
    table = [{"File": r.file, "Input": INPUT_KINDS.get(r.input_kind, ""), "Result": {"ok": "Possible pneumonia" if r.flagged else "Not flagged",
                                         "rejected": "Refused", "error": "Not screened"}[r.status],
              "Probability": format_probability(r.probability) if r.probability is not None else "",
              "Note": r.message} for r in rows]
    st.dataframe(table, hide_index=True, width="stretch")
    # A download needs nothing from Python: no rerun, which would draw every result card again.
    st.download_button("Download results (CSV)", screening.rows_to_csv(rows), "screening_results.csv", "text/csv",
                       on_click="ignore")
    st.caption("Keep this file: add each child's diagnosis (NORMAL or PNEUMONIA) in its **diagnosis** column when it "
               "is known, and bring it back to **Site calibration** for your clinic's own thresholds. It holds no "
               "image, only each image's fingerprint (sha256) and scores.")
