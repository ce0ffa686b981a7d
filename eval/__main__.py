"""Score a prediction file against gt.json and print the mAP table and per-class AP.

Example: python -m eval --gt data/THUMOS14/gt.json --pred result.json --subset test --dataset THUMOS
With --diagnose [--out DIR]: also the DETAD-style diagnosis (mAP by GT length, coverage and
instances per video; false-positive profile), written to DIR as CSV, JSON and PNG; add
--ignore_any_tiou for the bins' ignore rule of DETAD's released code.
"""
import argparse
import sys

import numpy as np

from config import DEFAULT_PRESET, PRESETS
from eval.detection import ANETDetection
from eval.diagnosis import diagnose_detector
from eval.diagnosis_report import format_diagnosis, write_diagnosis
from utils import UserError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="ground-truth gt.json")
    parser.add_argument("--pred", required=True,
                        help="prediction JSON {version, results, external_data}")
    parser.add_argument("--dataset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                        help="sets the default tIoU thresholds, subset and averaging")
    parser.add_argument("--subset", default=None,
                        help="gt.json subset (default: the dataset's eval subset)")
    parser.add_argument("--tiou", type=float, nargs="+", default=None, help="tIoU thresholds")
    parser.add_argument("--no_per_class", action="store_true", help="print only the mAP table")
    parser.add_argument("--diagnose", action="store_true",
                        help="also print the DETAD-style diagnosis and write its CSV/JSON/PNG "
                             "to --out")
    parser.add_argument("--out", default=".",
                        help="folder for the --diagnose files (default: current folder)")
    parser.add_argument("--fp_tiou", type=float, default=0.5,
                        help="tIoU of the false-positive profile")
    parser.add_argument("--ignore_any_tiou", action="store_true",
                        help="--diagnose bins: a prediction matched to a GT outside the bin is "
                             "ignored at every tIoU once it is at one (DETAD's released code); "
                             "default: at that tIoU only (its paper)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    cli = parser.parse_args(argv)
    if cli.ignore_any_tiou and not cli.diagnose:
        parser.error("--ignore_any_tiou changes the diagnosis: add --diagnose")
    preset = PRESETS[cli.dataset]
    thresholds = np.asarray(cli.tiou if cli.tiou else preset["tiou_thresholds"], dtype=np.float64)
    n_avg = preset["num_tiou_for_average"] if cli.tiou is None else len(thresholds)
    try:
        detection = ANETDetection(cli.gt, cli.pred, thresholds, cli.subset or preset["eval_subset"],
                                  cli.dataset, num_tiou_for_average=n_avg)
        if detection.evaluate() is None:
            raise UserError(f"{cli.gt}: {detection.report()}; nothing to score (the predictions "
                            f"are in {cli.pred})")
        diagnosis = (diagnose_detector(detection, cli.gt, cli.fp_tiou,
                                       ignore_any_tiou=cli.ignore_any_tiou)
                     if cli.diagnose else None)
    except UserError as err:
        if cli.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(detection.report(per_class=not cli.no_per_class))
    if diagnosis is not None:
        print(format_diagnosis(diagnosis))
        try:
            paths = write_diagnosis(diagnosis, cli.out)
        except OSError as err:
            print(f"error: cannot write the diagnosis to {cli.out} ({err.strerror or err})",
                  file=sys.stderr)
            return 1
        print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
