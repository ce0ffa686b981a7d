"""Evaluation: CAS -> proposals (docs/method.md §11), detection mAP (§12), DETAD-style diagnosis."""
from eval.detection import ANETDetection, EvaluationInputError, format_report
from eval.diagnosis import BIN_TABLE, diagnose, diagnose_detector, short_action_mAP, short_action_mAP_of
from eval.proposals import (group_runs, nms, outer_inner_contrast, outer_ranges, range_sums,
                            segments_to_seconds, upsample, video_proposals,
                            warp_times, write_results_json)

__all__ = ["ANETDetection", "BIN_TABLE", "EvaluationInputError", "diagnose", "diagnose_detector",
           "format_report", "short_action_mAP", "short_action_mAP_of", "group_runs", "nms",
           "outer_inner_contrast", "outer_ranges", "range_sums", "segments_to_seconds",
           "upsample", "video_proposals", "warp_times", "write_results_json"]
