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

from options import (OneLineParser, Range, add_table_option, check_ranges, show_value,
                     source_comments)
from utils import UserError, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent
CLASS_LIST_DIR = REPO_ROOT / "classes"
DATA_CLASS_LIST = "classes.txt"    # a data folder's own class list (a user's dataset)

# ---------------------------------------------------------------------------------------------
# Presets. One line per knob; values are the released code's (docs/method.md §2 and §11).
# ---------------------------------------------------------------------------------------------
COMMON = dict(
    seed=2,                       # python / numpy / torch seed
    feature_dim=2048,             # I3D RGB (1024) || flow (1024)
    dropout=0.7,                  # snippet / embedding dropout rate
    frames_per_sec=25.0,          # video frame rate of the feature extraction (29.97, 30000/1001)
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
    # float precision on CUDA (docs/running.md, On a GPU); a CPU run computes in float32 always
    tf32=False,                   # matmuls in TF32 (PyTorch's default: off, strict float32)
    cudnn_tf32=True,              # cuDNN convolutions in TF32 (PyTorch's default: on)
    amp_dtype="bfloat16",         # autocast dtype under --amp (losses stay float32)
    # data pipeline
    skip_data_checks=False,       # skip per-file feature checks (once a dataset has passed)
    feature_cache_gb=4.0,         # in-memory feature cache budget (0 = off: read from disk)
    # GPU memory for the features of all videos when they fit feature_cache_gb (else pinned host
    # memory): training batches and evaluation inputs are then gathered where the model runs
    resident_features_gb=8.0,
    eval_batch_rows=12000,        # evaluation passes: padded rows per forward (videos x length)
    # run folder / logging
    dataset_name="",              # names checkpoints/{dataset_name}/, logs ("": resolve_dataset)
    outdir="default",             # run folder name under checkpoints/{dataset_name}/
    suffix="",                    # appended to the run folder name
    checkpoint_root="checkpoints",  # root of all run folders
    result_path="",               # where training writes each result JSON ("": the run folder)
    visualize_videos=8,           # --visualize: how many test videos to plot (0 = all)
    # torchrun: split the evaluation / pseudo-proposal passes across processes (False: rank 0 alone)
    distributed_eval=True,        # torchrun: evaluation passes split across processes
    # model selection without the test set: hold out a count (20), a fraction (0.2) or a file of ids
    # of the training videos, scored at every evaluation ("" = off, the released protocol)
    val_videos="",                # held-out training videos for model selection: N, fraction, file
)

DEFAULT_PRESET = "THUMOS"          # where a tool needs one and none is given (python -m eval)
PRESETS = {
    "THUMOS": dict(
        data_dir="data/THUMOS14",     # gt.json, split_{train,test}.txt, {train,test}/VID.npy
        class_list="THUMOS14.txt",    # class names in classes/, one per line (the AP table order)
        eval_subset="test",           # gt.json subset used for evaluation
        epochs=800,                   # epochs of the whole run (the last step runs to this one)
        epochs_per_step=100,          # epochs of each step before the last
        num_steps=3,                  # refinement steps after the base model
        weight_decay=5e-5,            # Adam weight decay
        sample_segments_num=750,      # S: snippets fed to the model
        max_segments_num=200,         # K: proposals per video for segment attention
        cls_threshold=0.25,           # video-level class score threshold at test time
        tiou_thresholds=np.arange(0.1, 1.0, 0.1),     # tIoU thresholds of the mAP
        num_tiou_for_average=7,       # average mAP over the first N thresholds
        extra_average_ranges=[0.1, 0.5, 0.3, 0.7],   # (low, high) pairs also averaged and reported
        diagnosis_bins="THUMOS14-test",  # --diagnose bin edges (eval/diagnosis.py BIN_TABLE)
        synthetic_profile="THUMOS14",    # shape of the --demo data (synthetic_data.py PROFILES)
        nms_thresh=0.45,              # tIoU above which a lower-scored detection is dropped
        fg_topk_seg=8,                # foreground video score: mean of the top T // 8 snippets
        bg_topk_seg=3,                # background video score: mean of the top T // 3 snippets
        lamb_fg=1.0,                  # weight of the foreground video loss
        lamb_bg=0.5,                  # weight of the background video loss
        lamb_abg=0.5,                 # weight of the attention (action / background) loss
        delta=0.5,                    # proposals widened by delta x length on each side
        alpha=0.7,                    # dynamic sampling: proposals of this share of the score mass
        gamma=6.0,                    # dynamic sampling: spans up to gamma (2 delta + 1) stretched
        beta=0.2,                     # weight of the uncertainty regulariser
        batch_size=16,                # videos per training batch (the global batch on torchrun)
        embed_dropout=False,          # dropout before the embedding / attention / uncertainty
        # proposal generation (docs/method.md §11)
        cas_thresh=np.arange(0.15, 0.25, 0.05),      # detections: thresholds of the CAS branch
        att_thresh=np.arange(0.1, 0.925, 0.025),     # detections: of the attention branch
        pseudo_cas_thresh=[],                        # pseudo proposals: of the CAS branch
        pseudo_att_thresh=np.arange(0.4, 0.925, 0.025),  # pseudo proposals: of the attention branch
        fusion_cas_weight=1.0,        # score map = w_cas * cas + w_att * att
        fusion_att_weight=0.0,
        oic_lamb=0.2,                 # outer region length / inner length
        oic_gamma_cas=0.0,            # weight of the video score in the CAS-branch proposal score
        oic_gamma_att=0.0,            # same, attention branch
    ),
    "ActivityNet": dict(
        data_dir="data/ActivityNet13", class_list="ActivityNet13.txt", eval_subset="val",
        epochs=100, epochs_per_step=50, num_steps=1, weight_decay=1e-3,
        sample_segments_num=150, max_segments_num=100, cls_threshold=0.10,
        tiou_thresholds=np.arange(0.5, 1.0, 0.05), num_tiou_for_average=10,
        extra_average_ranges=[], diagnosis_bins="DETAD", synthetic_profile="ActivityNet13",
        nms_thresh=0.90, fg_topk_seg=2, bg_topk_seg=10,
        lamb_fg=5.0, lamb_bg=0.5, lamb_abg=0.5,
        delta=0.0, alpha=0.3, gamma=10.0, beta=0.2,
        batch_size=64, embed_dropout=True,
        cas_thresh=[0.005, 0.01, 0.015, 0.02], att_thresh=[0.005, 0.01, 0.015, 0.02],
        pseudo_cas_thresh=np.arange(0.1, 0.305, 0.005), pseudo_att_thresh=[],
        fusion_cas_weight=0.7, fusion_att_weight=0.3,
        oic_lamb=0.15, oic_gamma_cas=0.0, oic_gamma_att=0.25,
    ),
}

# The demos: small synthetic datasets shaped like each benchmark (generated on first use, see
# synthetic_data.py) and schedules that run the whole multi-step pipeline in a few minutes on a
# 2-core CPU. Each keeps its preset's shape: THUMOS base + 2 refinement steps, ActivityNet base +
# 1 step (the ActivityNet preset's), with that preset's post-processing and loss weights.
DEMO = dict(                    # THUMOS demo (data_dir data/synthetic_THUMOS14, set in build_args)
    outdir="demo", feature_dim=256,
    epochs=60, epochs_per_step=20, num_steps=2,
    sample_segments_num=256, batch_size=16, eval_freq=5, lr=1e-3,
)
DEMO_PRESETS = {
    "THUMOS": DEMO,
    "ActivityNet": dict(        # data_dir data/synthetic_ActivityNet13 (set in build_args)
        class_list="ActivityNet13_demo.txt",  # every 10th class of 200: enough videos per class
        outdir="demo", feature_dim=256,
        epochs=40, epochs_per_step=20, num_steps=1,
        sample_segments_num=150, batch_size=16, eval_freq=5, lr=1e-3,
    ),
}

# The final step's best average mAP of each demo as shipped, on any CPU: the demo's last line says
# whether a run fell inside (CPU code paths and seeds pooled, mean ± 3 std; docs/demo.md)
DEMO_EXPECTED_MAP = {"THUMOS": (13.1, 16.6), "ActivityNet": (28.0, 29.3)}

# Flags that take no value (released CLI switches and run modes).
SWITCHES = {
    "test": "evaluate the checkpoints in --checkpoint instead of training",
    "visualize": "write per-video plots of CAS, attention and proposals",
    "no_resume": "start from scratch even if model_latest.pth exists",
    "overwrite": "test mode: write over earlier test results made with another config",
    "reset_epoch": "restart the epoch counter when loading --checkpoint",
    "demo": "run on the synthetic dataset with the small demo schedule",
    "debug": "show full tracebacks on errors",
    "diagnose": "write a DETAD-style diagnosis (mAP by action length, false-positive types) "
                "per evaluation",
    "ignore_any_tiou": "with --diagnose: DETAD's released ignore rule (a prediction matched "
                       "outside a bin is ignored at every tIoU once it is at one)",
    "amp": "autocast (amp_dtype, bf16) on GPU, losses in float32 (changes numbers slightly; "
           "off by default)",
    "deterministic": "deterministic GPU kernels (torch.use_deterministic_algorithms, "
                     "cuBLAS/cuDNN settings)",
}
# Options of the released CLI that are not preset keys.
EXTRA_OPTIONS = dict(
    checkpoint="",                # --test, predict.py: a run folder; training: a .pth to start from
    start_epoch=0,                # with --checkpoint FILE --reset_epoch: the epoch to count from
    gpu="",                       # GPU index (sets CUDA_VISIBLE_DEVICES)
    device="",                    # torch device (default: cuda when available, else cpu)
)
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
    "outdir", "suffix", "checkpoint_root", "save_dir", "log_path", "dataset_name",
    "class_list_file",            # where class_names (compared: contents and order) were read
    # how this command starts, not what the run is (--demo sets preset keys, which are compared)
    "test", "no_resume", "overwrite", "checkpoint", "start_epoch", "reset_epoch", "demo",
    # this process and machine (numbers differ in their last bits across devices, as across GPUs)
    "rank", "is_main", "device", "gpu",
    # derived from compared keys (frames_per_sec / segment_frames_num)
    "snippets_per_sec",
    # num_workers is compared: with workers the training loader's random draws differ
    # (README, Reproducibility)
)

COUNT, AT_LEAST_0, POSITIVE = Range(1), Range(0), Range(0, low_open=True)
UNIT, FRACTION = Range(0, 1), Range(0, 1, high_open=True)
# Every numeric key and its valid values, checked in one place (check_ranges; a list key value by
# value); tests/test_reliability.py checks that every numeric key of every preset is here.
RANGES = dict(
    seed=Range(0, 2**32 - 1), feature_dim=COUNT, dropout=FRACTION, frames_per_sec=POSITIVE,
    segment_frames_num=COUNT, test_upgrade_scale=COUNT, num_heads=COUNT, eval_freq=COUNT,
    num_workers=AT_LEAST_0, lr=POSITIVE, feature_cache_gb=AT_LEAST_0,
    resident_features_gb=AT_LEAST_0, eval_batch_rows=COUNT, visualize_videos=AT_LEAST_0,
    epochs=COUNT, epochs_per_step=COUNT, num_steps=AT_LEAST_0, weight_decay=AT_LEAST_0,
    sample_segments_num=COUNT, max_segments_num=COUNT, cls_threshold=UNIT, tiou_thresholds=UNIT,
    num_tiou_for_average=COUNT, extra_average_ranges=UNIT, nms_thresh=UNIT, fg_topk_seg=COUNT,
    bg_topk_seg=COUNT, lamb_fg=AT_LEAST_0, lamb_bg=AT_LEAST_0, lamb_abg=AT_LEAST_0,
    delta=AT_LEAST_0, alpha=UNIT, gamma=AT_LEAST_0, beta=AT_LEAST_0, batch_size=COUNT,
    cas_thresh=UNIT, att_thresh=UNIT, pseudo_cas_thresh=UNIT, pseudo_att_thresh=UNIT,
    fusion_cas_weight=AT_LEAST_0, fusion_att_weight=AT_LEAST_0, oic_lamb=AT_LEAST_0,
    oic_gamma_cas=AT_LEAST_0, oic_gamma_att=AT_LEAST_0, start_epoch=AT_LEAST_0)
RATE_KEYS = ("frames_per_sec",)     # frame rates: a number (29.97) or a ratio (30000/1001)


class ConfigError(UserError):
    """A configuration problem the user can fix (bad key, bad value, missing class list)."""


def make_parser(dataset):
    defaults = {**COMMON, **PRESETS[dataset], **EXTRA_OPTIONS}
    parser = OneLineParser(
        prog=f"main_{dataset}.py", allow_abbrev=False, usage="%(prog)s [--KEY VALUE ...]",
        description=f"ASM-Loc on {dataset}. Any preset key of config.py can be overridden; each "
                    f"key's description is its comment in config.py.",
        error_type=ConfigError, hint=" (see --help for every key of config.py)")
    for key, help_text in SWITCHES.items():
        parser.add_argument(f"--{key}", action="store_true", help=help_text)
    described = source_comments(__file__, ("COMMON", "PRESETS", "EXTRA_OPTIONS"))
    demo = DEMO_PRESETS.get(dataset, {})
    for key, default in defaults.items():
        shown = f"default {show_value(default)}" + (
            f"; --demo {show_value(demo[key])}" if key in demo and demo[key] != default else "")
        add_table_option(parser, key, default,
                         f"{described[key]} ({shown})" if key in described else f"({shown})",
                         SHORT_FLAGS.get(key), rate=key in RATE_KEYS)
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
        raise ConfigError(f"class list {path} not found; pass --class_list FILE")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"class list {path} is empty or has duplicate names; it names one class "
                          f"a line (--class_list FILE)")
    return names


def class_list_file(class_list):
    """The file a class_list value names: a path from the current directory (or absolute), else
    a name in classes/."""
    for path in (Path(class_list), CLASS_LIST_DIR / class_list):
        if path.is_file():
            return str(path)
    raise ConfigError(f"class list {class_list} not found (neither from the current directory "
                      f"nor in {CLASS_LIST_DIR}); pass --class_list FILE")


def resolve_dataset(args, preset, class_list_given):
    """A data folder with classes.txt is a dataset of its own: that file is the class list unless
    --class_list is given; the folder's name is its name (outside the preset's own folder)."""
    own = os.path.join(args.data_dir, DATA_CLASS_LIST)
    from_folder = not class_list_given and os.path.isfile(own)
    if from_folder:
        args.class_list = own
    folder = os.path.abspath(args.data_dir)
    if not args.dataset_name:
        args.dataset_name = (os.path.basename(folder) if from_folder and folder != os.path.abspath(
            PRESETS[preset]["data_dir"]) else preset)


def run_folder_name(args):
    name = (f"t{args.sample_segments_num}_step{args.num_steps}_e{args.epochs_per_step}"
            f"_gamma{args.gamma:g}_alpha{args.alpha:g}_delta{args.delta:g}")
    return f"{name}_{args.suffix}" if args.suffix else name


def _validate(args):
    if args.overwrite and not args.test:
        raise ConfigError("--overwrite is for test mode (--test); to start a training run over "
                          "use --no_resume")
    if args.feature_dim % args.num_heads:
        raise ConfigError(f"--feature_dim {args.feature_dim} must be divisible by --num_heads "
                          f"{args.num_heads}")
    if args.amp_dtype not in ("bfloat16",):
        raise ConfigError(f"--amp_dtype {args.amp_dtype} is not supported: autocast runs in "
                          f"bfloat16 (float16 would need loss scaling, which this code does not "
                          f"do)")
    if len(args.tiou_thresholds) == 0:
        raise ConfigError("--tiou_thresholds needs at least one value")
    if args.dataset_name in ("", ".", "..") or set("/\\") & set(args.dataset_name):
        raise ConfigError(f"--dataset_name {args.dataset_name!r} must be a folder name")
    if args.test and not args.checkpoint:
        raise ConfigError("--test needs --checkpoint DIR (a folder of model_step*.pth files)")


def derive(args):
    """Threshold lists as float64 arrays and the values that follow from other keys (after any
    change); the ranges are checked first."""
    check_ranges(args, RANGES, ConfigError)
    for key in ("tiou_thresholds", "cas_thresh", "att_thresh", "pseudo_cas_thresh",
                "pseudo_att_thresh"):
        setattr(args, key, np.asarray(getattr(args, key), dtype=np.float64))
    ranges = np.asarray(args.extra_average_ranges, dtype=np.float64).reshape(-1)
    if len(ranges) % 2:
        raise ConfigError(f"--extra_average_ranges takes (low, high) pairs, got {len(ranges)} "
                          f"values")
    args.extra_average_ranges = ranges.reshape(-1, 2).tolist()
    if not getattr(args, "class_names", None):     # else kept (test mode: the trained run's)
        args.class_list_file = class_list_file(args.class_list)
        args.class_names = load_class_names(args.class_list_file)
    args.class_name_lst = list(args.class_names)
    args.action_cls_num = len(args.class_name_lst)
    args.snippets_per_sec = args.frames_per_sec / args.segment_frames_num   # r = 25/16
    return args


def demo_data_dir(dataset):
    """The folder of --demo's generated data without --data_dir: data/synthetic_<preset folder>."""
    return os.path.join("data", "synthetic_" + Path(PRESETS[dataset]["data_dir"]).name)


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
        values.update(DEMO_PRESETS[dataset], data_dir=demo_data_dir(dataset))
    values.update({key: val for key, val in vars(cli).items() if val is not None})
    args = argparse.Namespace(**values, class_names=None)
    args.dataset = dataset
    resolve_dataset(args, dataset, cli.class_list is not None)
    derive(args)
    args.save_dir = os.path.join(args.checkpoint_root, args.dataset_name, args.outdir,
                                 run_folder_name(args))
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
    return {key: val.tolist() if isinstance(val, np.ndarray) else val
            for key, val in sorted(vars(args).items()) if key != "class_name_lst"}


def config_text(args):
    """config.json's text: the resolved config (its sha256 identifies the run in results.json)."""
    return json.dumps(config_to_dict(args), indent=2) + "\n"


def save_config(args, path):
    atomic_write_text(path, config_text(args))
