"""Framing localiser check: the frame size it reads under every acquisition shift, against the truth.

A framing shift (a crop, a wider field) changes the size of the training frame in
the image, and the localiser should read that change; every other shift (exposure,
blur, noise...) leaves it unchanged, and the localiser should not move. Run on the
validation patients' X-rays.

Usage: python -m benchmarks.framing [--data DIR] [--every 4] [--save]
--save writes the table into models/framing_localiser.json ("shift_check").
"""
from __future__ import annotations

import argparse

import numpy as np

from core.analysis import data
from core.analysis.shift import FRAME_MAGNIFICATION, SHIFTS
from core.serving import framing, registry


def measure(grays: list[np.ndarray]) -> list[dict]:
    localiser = framing.localiser(framing.shipped_localiser_sha256())
    as_framed = localiser.predict(grays)[:, 2]
    rows = []
    for name, shift in SHIFTS.items():
        read = localiser.predict([shift(gray) for gray in grays])[:, 2]
        # Relative to each X-ray as framed: the localiser's own reading of the training frame
        # varies between children, and that variation is not the shift's.
        change = read - as_framed
        rows.append({"shift": name, "true_size_change": FRAME_MAGNIFICATION[name],
                     "read_size_change_median": float(np.exp(np.median(change))),
                     "read_size_change_p10": float(np.exp(np.percentile(change, 10))),
                     "read_size_change_p90": float(np.exp(np.percentile(change, 90)))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None)
    parser.add_argument("--every", type=int, default=4, help="use every N-th validation X-ray")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    _, validation = data.patient_split(args.data or data.default_data_dir())
    examples, grays = data.decode_grays(validation[::args.every])
    rows = measure(grays)
    print(f"framing localiser on {len(examples)} validation X-rays: frame size read after each shift, "
          f"relative to the X-ray as framed")
    print(f"{'shift':<38} {'true':>6} {'median':>7} {'p10':>6} {'p90':>6}")
    for r in rows:
        print(f"{r['shift']:<38} {r['true_size_change']:6.2f} {r['read_size_change_median']:7.2f} "
              f"{r['read_size_change_p10']:6.2f} {r['read_size_change_p90']:6.2f}")
    if args.save:
        card_file, folder = framing.LOCALISER_PATH.with_suffix(".json").name, framing.LOCALISER_PATH.parent
        card = registry.load_shared(card_file, folder)
        card["shift_check"] = {"images": len(examples), "split": "validation (patient-level)", "rows": rows}
        registry.save_shared(card_file, card, folder)


if __name__ == "__main__":
    main()
