"""A run folder: its identity, its writability, and where test mode writes.

A run's identity is its whole resolved config (docs/method.md §2): the keys of config.json that can
change a result (all but config.NON_RESULT_KEYS).

- Training resumes a run folder only under the config that started it: check_run_folder compares the
  folder's config.json before anything is written, and stops naming every changed key.
- Test mode and predict.py take those keys from the config.json beside the checkpoints, flags given
  on the command line winning (adopt_trained_config); test mode writes into a folder of its own
  (test_output_folder), never into the training run's files, and writes over earlier test results
  there only under their config, or with --overwrite (check_run_folder again).
- A command that fails at its start leaves nothing behind (StartGuard): its inputs are checked
  before the folder is made, and a folder it made itself is removed.
"""
import json
import os
import shutil

from config import NON_RESULT_KEYS, RETIRED_FLAGS, config_to_dict, explicit_keys, rederive
from utils import UserError

CONFIG_NAME = "config.json"
# set by the launcher (torchrun) for this command, never taken from a run
LAUNCH_KEYS = ("world_size",)


class RunConfigChanged(UserError):
    """A run folder holds a run made under another config."""


def check_writable(folder):
    """Make `folder` (and its missing parents) and check that files can be written there (a
    folder that exists is only asked, so that a command that goes no further changes nothing);
    returns the folders this call made, deepest first."""
    made, parent = [], os.path.abspath(os.fspath(folder))
    while not os.path.exists(parent):
        made.append(parent)
        parent = os.path.dirname(parent)
    if not made and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
        return made
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".write_test")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as err:
        raise UserError(f"output folder {folder} is not writable ({err.strerror}); "
                        f"choose another with --outdir or --checkpoint_root") from None
    return made


class StartGuard:
    """Undo what a failed command did to its output folder, and only that: the folder when this
    command made it (with the parents it made, while empty) unless a training run there saved a
    checkpoint already; else the config.json that a test attempt wrote into a folder that had
    none (so that it never blocks the next attempt)."""

    def __init__(self, args):
        self.args = args
        self.made = []
        self.config_path = os.path.join(args.save_dir, CONFIG_NAME)
        self.had_config = os.path.isfile(self.config_path)

    def undo(self):
        args = self.args
        if self.made and (args.test or not os.path.exists(os.path.join(args.save_dir,
                                                                       "model_latest.pth"))):
            shutil.rmtree(self.made[0], ignore_errors=True)      # the run or test folder itself
            for parent in self.made[1:]:
                try:
                    os.rmdir(parent)              # only while empty: never another run's files
                except OSError:
                    break
        elif args.test and not self.had_config and os.path.isfile(self.config_path):
            os.remove(self.config_path)


def read_config(path):
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable config ({err}); the run's config cannot be "
                        f"checked: restore the file, or start over with --no_resume (test mode: "
                        f"--overwrite) or in another folder with --suffix NAME") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a config (a JSON object of key: value)")
    return config


def trained_dataset(folder):
    """The dataset recorded in `folder`/config.json, or None (no such file)."""
    path = os.path.join(os.fspath(folder), CONFIG_NAME)
    return read_config(path).get("dataset") if os.path.isfile(path) else None


def result_keys(config):
    return {key for key in config if key not in NON_RESULT_KEYS and key not in RETIRED_FLAGS}


def as_stored(args):
    """The config as config.json stores it (lists, JSON numbers), for comparisons with a stored
    one."""
    return json.loads(json.dumps(config_to_dict(args)))


def show(value):
    if isinstance(value, list) and len(value) > 6:           # class_names: a few, then the count
        return json.dumps(value[:3])[:-1] + f", ... {len(value)} items]"
    return value if isinstance(value, str) else json.dumps(value)


def differences(saved, current):
    """([(key, saved value, current value)] of the result-affecting keys that differ, [keys only
    one of the two records]) for two configs as config.json stores them."""
    mine, theirs = result_keys(current), result_keys(saved)
    changed = [(key, saved[key], current[key]) for key in sorted(mine & theirs)
               if saved[key] != current[key]]
    return changed, sorted(mine ^ theirs)


def format_changes(changed):
    return ", ".join(f"{key}: {show(old)} → {show(new)}" for key, old, new in changed)


def check_run_folder(args):
    """Before anything is written to args.save_dir: a training run there may be resumed, and test
    results there written over, only under the config that made them. Raises RunConfigChanged
    listing each changed key; returns the notes to print."""
    folder = args.save_dir
    path = os.path.join(folder, CONFIG_NAME)
    if (args.overwrite if args.test else args.no_resume) or not os.path.isfile(
            os.path.join(folder, CONFIG_NAME if args.test else "model_latest.pth")):
        return []
    if not os.path.isfile(path):
        return [f"note: run folder {folder} has no {CONFIG_NAME} (a released-code run folder?): "
                f"resuming it, its config could not be checked"]
    changed, one_sided = differences(read_config(path), as_stored(args))
    if changed:
        what = ("test folder", "test results", "a test folder", "--overwrite to write over them") \
            if args.test else ("run folder", "a run", "a run folder",
                               "--no_resume to start this folder over")
        raise RunConfigChanged(f"{what[0]} {folder} holds {what[1]} made with another config "
                               f"({format_changes(changed)}) and was left untouched; add --suffix "
                               f"NAME for {what[2]} of its own, or {what[3]}")
    if one_sided:
        return [f"note: {path} and this code record different keys; not compared: "
                f"{', '.join(one_sided)}"]
    return []


def adopt_trained_config(args, argv):
    """Test mode / predict.py: every result-affecting key from args.checkpoint/config.json, except
    the keys given in `argv` (the command line), which win. Changes `args`; returns the lines to
    print."""
    folder = os.fspath(args.checkpoint)
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        return [f"note: {folder} has no {CONFIG_NAME} (released checkpoints?): using config.py "
                f"and the command line"]
    trained = read_config(path)
    if trained.get("dataset", args.dataset) != args.dataset:
        raise UserError(f"{path}: the checkpoints were trained on {trained['dataset']}, not "
                        f"{args.dataset}; use main_{trained['dataset']}.py (predict.py --dataset "
                        f"{trained['dataset']})")
    explicit, current = explicit_keys(args.dataset, argv), as_stored(args)
    if "class_list" in explicit:              # the names come from that file, not from the run
        explicit.add("class_names")
    lines, overridden, from_run = (
        [f"config of the run: {path} (flags given now win: key: trained → now)"], [], [])
    for key in sorted(result_keys(trained) & result_keys(current)):
        if key in LAUNCH_KEYS or trained[key] == current[key]:
            continue
        if key in explicit:
            overridden.append((key, trained[key], current[key]))
        else:
            from_run.append(key)
            setattr(args, key, trained[key])
    lines += [f"{key}: {show(old)} → {show(new)}" for key, old, new in overridden]
    if from_run:
        lines.append(f"the run's values, not config.py's: {', '.join(from_run)}")
    missing = sorted(result_keys(current) - result_keys(trained) - set(LAUNCH_KEYS))
    if missing:
        lines.append(f"not recorded in {path}, taken from config.py: {', '.join(missing)}")
    if "class_names" not in explicit:
        if "class_names" in trained:          # the classifier's output order, as trained
            args.class_list_file = f"{path} (class_names)"
        else:                                 # a run of an older version: its class_list file
            args.class_names = None
    if "dataset_name" not in explicit and trained.get("dataset_name"):
        args.dataset_name = trained["dataset_name"]
    rederive(args)
    return lines


def test_output_folder(args):
    """Where test mode writes: DIR/test[_SUFFIX] when the checkpoint folder DIR is writable, else
    {checkpoint_root}/{dataset_name}/test/{name of DIR}[_SUFFIX]."""
    folder = os.path.abspath(os.fspath(args.checkpoint))
    suffix = f"_{args.suffix}" if args.suffix else ""
    own = os.path.join(folder, "test" + suffix)
    if os.access(folder, os.W_OK | os.X_OK) and (not os.path.exists(own)
                                                 or os.access(own, os.W_OK | os.X_OK)):
        return own
    return os.path.join(args.checkpoint_root, args.dataset_name, "test",
                        os.path.basename(folder) + suffix)
