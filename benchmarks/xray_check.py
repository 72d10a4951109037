"""How well the not-a-chest-X-ray check works: rejection rates on generated non-X-rays
and on real X-rays of patients held out from fitting it.

Usage: python -m benchmarks.xray_check [--count 2000] [--data DIR] [--save]
--save writes both rates into every model card (section "input_check").
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

from benchmarks.non_xrays import generate
from core.learning import data
from core.serving import registry
from core.serving.imaging import ImageError, decode_image
from core.serving.quality import NotChestXRayError, check_chest_xray


def rejected(payload: bytes, detector) -> bool:
    try:
        check_chest_xray(decode_image(payload), detector)
    except NotChestXRayError:
        return True
    except ImageError:
        return True  # undecodable counts as refused too; generated files always decode
    return False


def measure(count: int, data_dir, seed: int = 42) -> dict:
    detector = registry.load_detector()
    files = generate(count, seed=1)
    by_kind, refused = Counter(), Counter()
    for kind, payload in files:
        by_kind[kind] += 1
        refused[kind] += rejected(payload, detector)
    _, held_out = data.patient_split(data_dir, seed)
    xray_refused = sum(rejected(e.path.read_bytes(), detector) for e in held_out)
    return {
        "non_xray_rejected": sum(refused.values()) / len(files),
        "non_xray_count": len(files),
        "non_xray_rejected_by_kind": {k: refused[k] / by_kind[k] for k in by_kind},
        "xray_rejected": xray_refused / len(held_out),
        "xray_count": len(held_out),
        "xray_source": "real X-rays of the validation patients (not used to fit the check)",
        "threshold": detector.threshold if detector else None,
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
