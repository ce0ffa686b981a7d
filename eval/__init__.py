"""Scoring only: detection mAP of result files against gt.json (docs/method.md §12), the
evaluation protocol, DETAD-style diagnosis, and the readers and writers of those files.
`python -m eval` scores a result file from the command line. Torch-free."""
from eval.detection import ANETDetection
from eval.diagnosis import BIN_TABLE, diagnose, diagnose_detector, short_action_mAP
from eval.files import EvaluationInputError

__all__ = ["ANETDetection", "BIN_TABLE", "EvaluationInputError", "diagnose", "diagnose_detector",
           "short_action_mAP"]
