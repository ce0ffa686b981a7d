"""Experiment configuration: one table of presets per dataset, overridable from the command line.

Edit PRESETS to run ablations (with `--suffix NAME`: a run folder resumes only under the config that
made it); every key can also be overridden as `--key value`
(lists as `--key v1 v2 ...`, booleans as `--key true|false`). Unknown keys are an error.
Attribute names follow the released ASM-Loc code (docs/method.md §2).
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np

from utils import UserError

REPO_ROOT = Path(__file__).resolve().parent
CLASS_LIST_DIR = REPO_ROOT / "classes"

# ---------------------------------------------------------------------------------------------
# Presets. One line per knob; values are the released code's (docs/method.md §2 and §11).
# ---------------------------------------------------------------------------------------------
COMMON = dict(
    seed=2,                       # python / numpy / torch seed
    feature_dim=2048,             # I3D RGB (1024) || flow (1024)
    dropout=0.7,                  # snippet / embedding dropout rate
    frames_per_sec=25,            # video frame rate of the feature extraction
    segment_frames_num=16,        # frames per I3D snippet
    test_upgrade_scale=20,        # temporal upsampling of the CAS before grouping
    num_heads=8,                  # heads of the intra / inter segment attention
    eval_freq=5,                  # evaluate every N epochs and the last 9 (0-based e > epochs - 10)
    num_workers=0,                # DataLoader workers (the released default is 4)
    lr=1e-4,                      # Adam learning rate (betas 0.9, 0.999)
    # ablation switches (all on = the paper's model; state_dict unchanged when all on)
    use_intra_attention=True,     # intra-segment attention block
    use_inter_attention=True,     # inter-segment attention block
    use_uncertainty=True,         # uncertainty head weighting the pseudo instance loss
    use_pseudo_instance_loss=True,  # pseudo instance loss in steps >= 1
    use_dynamic_sampling=True,    # dynamic segment sampling in steps >= 1
    # data pipeline
    skip_data_checks=False,       # skip per-file feature checks (once a dataset has passed)
    feature_cache_gb=4.0,         # in-memory feature cache budget (0 = off: read from disk)
    # GPU memory for the features of all videos when they fit feature_cache_gb (else pinned host
    # memory): training batches and evaluation inputs are then gathered where the model runs
    resident_features_gb=8.0,
    eval_batch_rows=12000,        # evaluation passes: padded rows per forward (videos x length)
    # run folder / logging
    outdir="default",             # run folder name under checkpoints/{dataset}/
    suffix="",                    # appended to the run folder name
    checkpoint_root="checkpoints",  # root of all run folders
    result_path="",               # where training writes each result JSON (default: run folder)
    visualize_videos=8,           # --visualize: how many test videos to plot (0 = all)
    # torchrun: split the evaluation / pseudo-proposal passes across processes (False: rank 0 alone)
    distributed_eval=True,
    # model selection without the test set: hold out a count (20), a fraction (0.2) or a file of ids
    # of the training videos, scored at every evaluation ("" = off, the released protocol)
    val_videos="",
)

DEFAULT_PRESET = "THUMOS"          # where a tool needs one and none is given (python -m eval)
PRESETS = {
    "THUMOS": dict(
        data_dir="data/THUMOS14",
        class_list="THUMOS14.txt",
        eval_subset="test",           # gt.json subset used for evaluation
        epochs=800, epochs_per_step=100, num_steps=3,
        weight_decay=5e-5,
        sample_segments_num=750,      # S: snippets fed to the model
        max_segments_num=200,         # K: proposals per video for segment attention
        cls_threshold=0.25,           # video-level class score threshold at test time
        tiou_thresholds=np.arange(0.1, 1.0, 0.1),
        num_tiou_for_average=7,       # average mAP over the first N thresholds
        extra_average_ranges=[0.1, 0.5, 0.3, 0.7],   # (low, high) pairs also averaged and reported
        diagnosis_bins="THUMOS14-test",  # --diagnose bin edges (eval/diagnosis.py BIN_TABLE)
        synthetic_profile="THUMOS14",    # shape of the --demo data (synthetic_data.py PROFILES)
        nms_thresh=0.45,
        fg_topk_seg=8, bg_topk_seg=3,
        lamb_fg=1.0, lamb_bg=0.5, lamb_abg=0.5,
        delta=0.5, alpha=0.7, gamma=6.0, beta=0.2,
        batch_size=16,
        embed_dropout=False,          # dropout before the embedding / attention / uncertainty
        # proposal generation (docs/method.md §11)
        cas_thresh=np.arange(0.15, 0.25, 0.05),      # evaluation, CAS branch
        att_thresh=np.arange(0.1, 0.925, 0.025),     # evaluation, attention branch
        pseudo_cas_thresh=[],                        # pseudo proposals, CAS branch (unused)
        pseudo_att_thresh=np.arange(0.4, 0.925, 0.025),  # pseudo proposals, attention branch
        fusion_cas_weight=1.0,        # score map = w_cas * cas + w_att * att
        fusion_att_weight=0.0,
        oic_lamb=0.2,                 # outer region length / inner length
        oic_gamma_cas=0.0,            # weight of the video score in the CAS-branch proposal score
        oic_gamma_att=0.0,            # same, attention branch
    ),
    "ActivityNet": dict(
        data_dir="data/ActivityNet13",
        class_list="ActivityNet13.txt",
        eval_subset="val",
        epochs=100, epochs_per_step=50, num_steps=1,
        weight_decay=1e-3,
        sample_segments_num=150,
        max_segments_num=100,
        cls_threshold=0.10,
        tiou_thresholds=np.arange(0.5, 1.0, 0.05),
        num_tiou_for_average=10,
        extra_average_ranges=[],
        diagnosis_bins="DETAD",
        synthetic_profile="ActivityNet13",
        nms_thresh=0.90,
        fg_topk_seg=2, bg_topk_seg=10,
        lamb_fg=5.0, lamb_bg=0.5, lamb_abg=0.5,
        delta=0.0, alpha=0.3, gamma=10.0, beta=0.2,
        batch_size=64,
        embed_dropout=True,
        cas_thresh=[0.005, 0.01, 0.015, 0.02],
        att_thresh=[0.005, 0.01, 0.015, 0.02],
        pseudo_cas_thresh=np.arange(0.1, 0.305, 0.005),
        pseudo_att_thresh=[],
        fusion_cas_weight=0.7,
        fusion_att_weight=0.3,
        oic_lamb=0.15,
        oic_gamma_cas=0.0,
        oic_gamma_att=0.25,
    ),
}

# The demos: small synthetic datasets shaped like each benchmark (generated on first use, see
# synthetic_data.py) and schedules that run the whole multi-step pipeline in a few minutes on a
# 2-core CPU. Each keeps its preset's shape: THUMOS base + 2 refinement steps, ActivityNet base +
# 1 step (the ActivityNet preset's), with that preset's post-processing and loss weights.
DEMO = dict(                    # THUMOS demo
    # data_dir: data/synthetic_THUMOS14 (set in build_args)
    outdir="demo",
    feature_dim=256,
    epochs=60, epochs_per_step=20, num_steps=2,
    sample_segments_num=256,
    batch_size=16,
    eval_freq=5,
    lr=1e-3,
)
DEMO_PRESETS = {
    "THUMOS": DEMO,
    "ActivityNet": dict(
        # data_dir: data/synthetic_ActivityNet13 (set in build_args)
        class_list="ActivityNet13_demo.txt",  # every 10th class of 200: enough videos per class
        outdir="demo",
        feature_dim=256,
        epochs=40, epochs_per_step=20, num_steps=1,
        sample_segments_num=150,              # the preset's S
        batch_size=16,
        eval_freq=5,
        lr=1e-3,
    ),
}

# Flags that take no value (released CLI switches and run modes).
SWITCHES = {
    "test": "evaluate the checkpoints in --checkpoint instead of training",
    "visualize": "write per-video plots of CAS, attention and proposals",
    "no_resume": "start from scratch even if model_latest.pth exists",
    "reset_epoch": "restart the epoch counter when loading --checkpoint",
    "demo": "run on the synthetic dataset with the small demo schedule",
    "debug": "show full tracebacks on errors",
    "diagnose": "write a DETAD-style diagnosis (mAP by action length, false-positive types) "
                "per evaluation",
    "ignore_any_tiou": "with --diagnose: DETAD's released ignore rule (a prediction matched "
                       "outside a bin is ignored at every tIoU once it is at one)",
    "amp": "bf16 autocast on GPU (changes numbers slightly; off by default)",
    "deterministic": "deterministic GPU kernels (torch.use_deterministic_algorithms, "
                     "cuBLAS/cuDNN settings)",
}
# Options of the released CLI that are not preset keys.
EXTRA_OPTIONS = dict(checkpoint="", start_epoch=0, gpu="", device="")
SHORT_FLAGS = {"num_workers": "-j", "batch_size": "-b"}
# Released flags whose meaning this code does not have: using one is an error that says what to do.
RETIRED_FLAGS = {
    "pred_segment_path": "in the released code it reads a JSON of pseudo proposals to start from; "
                         "here every step's pseudo proposals are generated by the run and restored "
                         "from its folder (pseudo_proposals_step{k}.json), so drop the flag "
                         "(--result_path FILE writes the evaluation result JSON to FILE instead of "
                         "the run folder)",
}

# Keys that cannot change a result. A run folder's identity is every other key of its config.json:
# a run resumes only under the config that started it, and test mode / predict.py take these
# others from it.
NON_RESULT_KEYS = (
    # what is written besides the results, and how fast
    "visualize", "visualize_videos", "diagnose", "debug", "result_path", "feature_cache_gb",
    "skip_data_checks", "resident_features_gb",
    # how many videos share an evaluation forward: outputs differ in float32 rounding only, as
    # across devices
    "eval_batch_rows",
    # where the run folder is (the folder itself is what is compared)
    "outdir", "suffix", "checkpoint_root", "save_dir", "log_path",
    # how this command starts, not what the run is (--demo sets preset keys, which are compared)
    "test", "no_resume", "checkpoint", "start_epoch", "reset_epoch", "demo",
    # this process and machine (numbers differ in their last bits across devices, as across GPUs)
    "rank", "is_main", "device", "gpu",
    # derived from compared keys (frames_per_sec / segment_frames_num)
    "snippets_per_sec",
    # num_workers is compared: with workers the training loader's random draws differ
    # (README, Reproducibility)
)


class ConfigError(UserError):
    """A configuration problem the user can fix (bad key, bad value, missing class list)."""


def _parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_option(parser, key, default):
    flags = [f"--{key}"] + ([SHORT_FLAGS[key]] if key in SHORT_FLAGS else [])
    if isinstance(default, bool):
        parser.add_argument(*flags, type=_parse_bool, metavar="BOOL")
    elif isinstance(default, (list, tuple, np.ndarray)):
        parser.add_argument(*flags, type=float, nargs="*", metavar="X")
    elif isinstance(default, int):
        parser.add_argument(*flags, type=int)
    elif isinstance(default, float):
        parser.add_argument(*flags, type=float)
    else:
        parser.add_argument(*flags, type=str)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ConfigError line instead of a usage dump."""

    def error(self, message):
        raise ConfigError(f"{message} (see --help for every key of config.py)")


def make_parser(dataset):
    defaults = {**COMMON, **PRESETS[dataset], **EXTRA_OPTIONS}
    parser = _Parser(
        prog=f"main_{dataset}.py", allow_abbrev=False,
        description=f"ASM-Loc on {dataset}. Any preset key of config.py can be overridden.")
    for key, help_text in SWITCHES.items():
        parser.add_argument(f"--{key}", action="store_true", help=help_text)
    for key, default in defaults.items():
        _add_option(parser, key, default)
    for key in RETIRED_FLAGS:
        parser.add_argument(f"--{key}", help=argparse.SUPPRESS)
    parser.set_defaults(**{key: None for key in [*defaults, *RETIRED_FLAGS]})
    return parser


def explicit_keys(dataset, argv):
    """The keys given on the command line `argv` (not taken from a preset)."""
    cli = make_parser(dataset).parse_args(list(argv or []))
    return {key for key, value in vars(cli).items() if value is not None and value is not False}


def load_class_names(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class list {path} not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ConfigError(f"class list {path} has duplicate names")
    return names


def run_folder_name(args):
    name = (f"t{args.sample_segments_num}_step{args.num_steps}_e{args.epochs_per_step}"
            f"_gamma{args.gamma:g}_alpha{args.alpha:g}_delta{args.delta:g}")
    return f"{name}_{args.suffix}" if args.suffix else name


def _validate(args):
    positive = ["batch_size", "epochs", "epochs_per_step", "sample_segments_num", "eval_batch_rows",
                "max_segments_num", "feature_dim", "test_upgrade_scale", "fg_topk_seg",
                "bg_topk_seg", "eval_freq", "frames_per_sec", "segment_frames_num", "num_heads"]
    for key in positive:
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key} must be at least 1, got {getattr(args, key)}")
    if args.num_steps < 0 or args.num_workers < 0 or args.start_epoch < 0:
        raise ConfigError("--num_steps, --num_workers and --start_epoch must be >= 0")
    if args.feature_dim % args.num_heads:
        raise ConfigError(f"--feature_dim {args.feature_dim} must be divisible by --num_heads "
                          f"{args.num_heads}")
    if not 0 <= args.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {args.dropout}")
    if len(args.tiou_thresholds) == 0:
        raise ConfigError("--tiou_thresholds needs at least one value")
    if args.test and not args.checkpoint:
        raise ConfigError("--test needs --checkpoint DIR (a folder of model_step*.pth files)")


def derive(args):
    """Threshold lists as float64 arrays and the values that follow from other keys (after any
    change)."""
    for key in ("tiou_thresholds", "cas_thresh", "att_thresh", "pseudo_cas_thresh",
                "pseudo_att_thresh"):
        setattr(args, key, np.asarray(getattr(args, key), dtype=np.float64))
    ranges = np.asarray(args.extra_average_ranges, dtype=np.float64).reshape(-1)
    if len(ranges) % 2:
        raise ConfigError(f"--extra_average_ranges takes (low, high) pairs, got {len(ranges)} "
                          f"values")
    args.extra_average_ranges = ranges.reshape(-1, 2).tolist()
    args.class_name_lst = load_class_names(CLASS_LIST_DIR / args.class_list)
    args.action_cls_num = len(args.class_name_lst)
    args.snippets_per_sec = args.frames_per_sec / args.segment_frames_num   # r = 25/16
    return args


def build_args(dataset, argv=None):
    """Resolve preset + (demo) + command line into one namespace."""
    if dataset not in PRESETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {sorted(PRESETS)}")
    parser = make_parser(dataset)
    cli = parser.parse_args([] if argv is None else argv)
    for key, reason in RETIRED_FLAGS.items():
        if getattr(cli, key) is not None:
            raise ConfigError(f"--{key} is not supported: {reason}")
        delattr(cli, key)
    values = {**COMMON, **PRESETS[dataset], **EXTRA_OPTIONS}
    if cli.demo:
        values.update(DEMO_PRESETS[dataset],
                      data_dir=os.path.join("data",
                                            "synthetic_" + Path(PRESETS[dataset]["data_dir"]).name))
    values.update({key: val for key, val in vars(cli).items() if val is not None})
    args = argparse.Namespace(**values)
    args.dataset = dataset
    derive(args)
    args.save_dir = os.path.join(args.checkpoint_root, dataset, args.outdir, run_folder_name(args))
    args.log_path = os.path.join(args.save_dir, "log.txt")
    args.rank, args.world_size, args.is_main = 0, 1, True      # set by distributed.init_distributed
    if args.gpu != "":
        # must happen before CUDA is initialised (the released code misspelled this variable)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if not args.device:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    _validate(args)
    return args


def rederive(args):
    """derive() and the value checks again, after keys were changed (test mode taking a run's
    config)."""
    derive(args)
    _validate(args)
    return args


def config_to_dict(args):
    """JSON-friendly copy of the resolved config (arrays become lists)."""
    out = {}
    for key, val in sorted(vars(args).items()):
        if isinstance(val, np.ndarray):
            val = val.tolist()
        if key == "class_name_lst":
            continue
        out[key] = val
    return out


def config_text(args):
    """config.json's text: the resolved config (its sha256 identifies the run in results.json)."""
    return json.dumps(config_to_dict(args), indent=2) + "\n"


def save_config(args, path):
    from utils import atomic_write_text
    atomic_write_text(path, config_text(args))
