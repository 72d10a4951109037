"""How well the not-a-chest-X-ray check works: rejection rates on generated non-X-rays
and on real X-rays of patients held out from fitting it, as they are and under each
acquisition shift of core.analysis.shift (other machines, tighter framing).

Usage: python -m benchmarks.xray_check [--count 2000] [--data DIR] [--save]
--save writes both rates into every model card (section "input_check").
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace

from benchmarks.non_xrays import generate
from core.analysis import data
from core.analysis.shift import SHIFTS
from core.serving import registry
from core.serving.imaging import DecodedImage, ImageError, decode_image, to_uint8
from core.serving.quality import NotChestXRayError, check_chest_xray


def rejected(payload: bytes, detector) -> bool:
    try:
        return refused(decode_image(payload), detector)
    except ImageError:
        return True  # undecodable counts as refused too; generated files always decode


def refused(decoded: DecodedImage, detector) -> bool:
    try:
        check_chest_xray(decoded, detector)
    except NotChestXRayError:
        return True
    return False


def shifted_xrays_refused(examples: list[data.Example], detector) -> dict[str, float]:
    """Per acquisition shift, the share of these real X-rays the check refuses. A shifted image is
    stretched to the full 8-bit range, as decoding a file of it would, and checked anew: the X-ray check's
    measures that decoding kept are those of the picture before the shift."""
    decoded = [decode_image(e.path.read_bytes()) for e in examples]
    shifts = {**SHIFTS, "turned upside down (should be refused)": lambda gray: gray[::-1, ::-1]}
    return {name: sum(refused(replace(d, pixels=to_uint8(shift(d.pixels)), xray_check=None), detector)
                      for d in decoded) / len(decoded)
            for name, shift in shifts.items()}


def measure(count: int, data_dir, seed: int = 42) -> dict:
    detector = registry.load_detector()
    files = generate(count, seed=1)
    by_kind, refused = Counter(), Counter()
    for kind, payload in files:
        by_kind[kind] += 1
        refused[kind] += rejected(payload, detector)
    _, held_out = data.patient_split(data_dir, seed)
    by_shift = shifted_xrays_refused(held_out, detector)
    return {
        "non_xray_rejected": sum(refused.values()) / len(files),
        "non_xray_count": len(files),
        "non_xray_rejected_by_kind": {k: refused[k] / by_kind[k] for k in by_kind},
        "xray_rejected": by_shift["none"],
        "xray_rejected_by_shift": by_shift,
        "xray_count": len(held_out),
        "xray_source": "real X-rays of the validation patients (not used to fit the check)",
        "thresholds": {"layout": detector.layout_threshold, "grey_levels": detector.profile_threshold} if detector else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--data", default=None)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    result = measure(args.count, args.data or data.default_data_dir())
    print(json.dumps(result, indent=1))
    if args.save:
        for name in registry.model_names():
            registry.update_card(name, "input_check", result)


if __name__ == "__main__":
    main()
