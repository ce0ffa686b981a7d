"""Score a prediction file against gt.json and print the mAP table and per-class AP.

Example: python -m eval --gt data/THUMOS14/gt.json --pred result.json --subset test --dataset THUMOS
"""
import argparse
import sys

import numpy as np

from config import PRESETS
from eval.detection import ANETDetection
from utils import UserError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="ground-truth gt.json")
    parser.add_argument("--pred", required=True, help="prediction JSON {version, results, external_data}")
    parser.add_argument("--dataset", choices=sorted(PRESETS), default="THUMOS",
                        help="sets the default tIoU thresholds, subset and averaging")
    parser.add_argument("--subset", default=None, help="gt.json subset (default: the dataset's eval subset)")
    parser.add_argument("--tiou", type=float, nargs="+", default=None, help="tIoU thresholds")
    parser.add_argument("--no_per_class", action="store_true", help="print only the mAP table")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    cli = parser.parse_args(argv)
    preset = PRESETS[cli.dataset]
    thresholds = np.asarray(cli.tiou if cli.tiou else preset["tiou_thresholds"], dtype=np.float64)
    n_avg = preset["num_tiou_for_average"] if cli.tiou is None else len(thresholds)
    try:
        detection = ANETDetection(cli.gt, cli.pred, thresholds, cli.subset or preset["eval_subset"],
                                  cli.dataset, num_tiou_for_average=n_avg)
        detection.evaluate()
    except UserError as err:
        if cli.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(detection.report(per_class=not cli.no_per_class))
    return 0


if __name__ == "__main__":
    sys.exit(main())
