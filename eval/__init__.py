"""Evaluation: CAS -> proposals (SPEC.md section 8) and detection mAP (section 10)."""
from eval.detection import ANETDetection, EvaluationInputError, format_report
from eval.proposals import (group_runs, nms, outer_inner_contrast, outer_ranges, range_sums,
                            segments_to_seconds, upsample, video_proposals,
                            warp_times, write_results_json)

__all__ = ["ANETDetection", "EvaluationInputError", "format_report", "group_runs", "nms",
           "outer_inner_contrast", "outer_ranges", "range_sums", "segments_to_seconds",
           "upsample", "video_proposals", "warp_times", "write_results_json"]
