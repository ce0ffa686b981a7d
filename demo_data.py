"""The data folder of --demo: generated once in the real layout (synthetic_data.py), checked on
every use, and never written over unless it holds nothing but its own unchanged files.

SYNTHETIC.json, written last, records the generation parameters, the sha256 of the whole set and
a manifest {relative path: sha256} of every generated file. `ensure_demo_dataset`:

- generates the set where the folder is missing or empty, into a temporary sibling folder that
  is renamed into place, so an interrupted generation never leaves a half-written set;
- uses the set when its parameters and files are the ones this run needs;
- generates it again only in the default demo folder (`config.demo_data_dir`, what --demo uses
  without --data_dir), and only when every file there is one of its manifest, unchanged: exactly
  those files are removed;
- otherwise refuses with one line naming the difference (a parameter, a changed, missing or extra
  file) and leaves the folder as it was.

No code path deletes a file or folder that it did not make, except the default demo folder's own
unchanged files.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from config import demo_data_dir
from synthetic_data import (GENERATOR_VERSION, MARKER, PROFILES, files_manifest, files_sha256,
                            generate_synthetic_dataset)
from utils import UserError, atomic_write_json


class DemoDataError(UserError):
    """A --demo data folder that is not the demo set this run needs and is not ours to replace."""


def demo_params(args):
    """The generation parameters of the demo set a config needs (recorded in SYNTHETIC.json)."""
    profile = args.synthetic_profile
    num_train, num_test = PROFILES[profile]["demo_videos"]
    return {"profile": profile, "num_train": num_train, "num_test": num_test,
            "feature_dim": int(args.feature_dim), "seed": 0,
            "class_names": list(args.class_name_lst),
            "durations": list(PROFILES[profile]["durations"]), "generator": GENERATOR_VERSION}


def entries(root):
    """Every path under root (files, folders, links) relative to it, as posix text, the marker
    left out."""
    root = Path(root)
    return {path.relative_to(root).as_posix() for path in root.rglob("*")} - {MARKER}


def show(value):
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} values]"
    return json.dumps(value)


def listed(names, limit=3):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                       else "")


def compare(target, stored, params):
    """How the set at target differs from the one `params` describe: (parameter changes
    [(key, recorded, needed)], {"changed" / "missing" / "extra" / "unverified": [relative
    paths]}, the manifest of the set's own files). A record without a manifest (an older demo
    set) vouches for every file there while the set's checksum matches; else "unverified"."""
    changes = [(key, stored.get(key), value) for key, value in params.items()
               if stored.get(key) != value]
    current = files_manifest(target)
    own = stored.get("files")
    unverified = not isinstance(own, dict) and files_sha256(target, current) != stored.get("sha256")
    if not isinstance(own, dict):
        own = {} if unverified else current
    folders = {str(parent) for name in own for parent in PurePosixPath(name).parents} - {"."}
    files = {"changed": [name for name in own if name in current and current[name] != own[name]],
             "missing": [name for name in own if name not in current],
             "extra": [] if unverified else sorted(entries(target) - set(own) - folders),
             "unverified": [MARKER] if unverified else []}
    return changes, files, own


def difference_text(changes, files):
    changed = files["changed"]
    parts = [", ".join(f"{key}: {show(old)} → {show(new)}" for key, old, new in changes),
             f"{listed(changed)} differ{'s' if len(changed) == 1 else ''} from the checksum in "
             f"{MARKER}" if changed else "",
             f"missing: {listed(files['missing'])}" if files["missing"] else "",
             f"files it did not generate: {listed(files['extra'])}" if files["extra"] else "",
             f"its files differ from the checksum in its {MARKER}" if files["unverified"] else ""]
    return "; ".join(part for part in parts if part)


def read_record(target):
    """SYNTHETIC.json of the set at target, or None when it is unreadable."""
    try:
        stored = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def ensure_demo_dataset(args):
    """The demo set at args.data_dir, generated when needed (module docstring); returns the
    sha256 of its files (config.json records it). Raises DemoDataError (one line) instead of
    touching a folder that is not the demo set's own."""
    target = Path(args.data_dir)
    params = demo_params(args)
    default = os.path.abspath(target) == os.path.abspath(demo_data_dir(args.dataset))
    script = f"main_{args.dataset}.py"
    marker = target / MARKER
    if marker.is_file():
        stored = read_record(target)
        if stored is None:
            raise DemoDataError(f"demo data {target}: its {MARKER} is unreadable, so its files "
                                f"cannot be checked; it was left untouched: delete the folder to "
                                f"have it generated again, or pass another --data_dir")
        changes, files, own = compare(target, stored, params)
        if not changes and not any(files.values()):
            return stored.get("sha256") or files_sha256(target, own)
        what = difference_text(changes, files)
        if not default or files["changed"] or files["extra"] or files["unverified"]:
            where = ("delete the folder to have it generated again, or pass another --data_dir"
                     if default else
                     f"--demo writes only into a new or empty --data_dir, or over its own "
                     f"unchanged {demo_data_dir(args.dataset)}: pass a new --data_dir, or drop "
                     f"--data_dir")
            raise DemoDataError(f"demo data {target} is not the demo set this run needs ({what}); "
                                f"it was left untouched: {where}")
        print(f"demo data {target}: {what}; generating it again", flush=True)
        generate(target, params, own)
    elif target.exists() and not (target.is_dir() and not any(target.iterdir())):
        if (target / "gt.json").is_file() or (target / "split_train.txt").is_file():
            raise DemoDataError(f"--demo trains the small demo schedule on generated data, but "
                                f"--data_dir {target} holds a dataset of its own (no {MARKER}); "
                                f"it was left untouched: to train on it, drop --demo (python "
                                f"{script} --data_dir {target}), or give --demo a new or empty "
                                f"--data_dir")
        raise DemoDataError(f"--demo generates its data into --data_dir {target}, which is not "
                            f"empty and holds no {MARKER} (not a demo set); it was left "
                            f"untouched: pass a new or empty --data_dir")
    else:
        generate(target, params)
    return json.loads(marker.read_text())["sha256"]


def generate(target, params, own=None):
    """Write the set into a temporary sibling folder, then put it in place of target: an empty
    folder (renamed over), or a set whose own files `own` (a manifest) are removed first, the
    marker last."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        generate_synthetic_dataset(tmp, **{key: val for key, val in params.items()
                                           if key != "generator"})
        files = files_manifest(tmp)
        atomic_write_json(tmp / MARKER, {**params, "sha256": files_sha256(tmp, files),
                                         "files": files})
        if own is not None:
            remove_own(target, own)
        os.replace(tmp, target)                   # over an empty folder: one atomic rename
    except OSError:                               # another process may have finished first
        stored = read_record(target)
        if stored is None or any(compare(target, stored, params)[1].values()) \
                or compare(target, stored, params)[0]:
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)                    # this call's own temporary folder
    return target


def remove_own(target, own):
    """Delete the set's own files (manifest `own`), then the folders they leave empty, then the
    marker: an interruption leaves the marker and some of its files, which the next run
    regenerates."""
    for name in own:
        path = target / name
        if path.is_file():
            path.unlink()
    folders = {parent for name in own for parent in PurePosixPath(name).parents}
    for folder in sorted(folders, key=lambda path: -len(path.parts)):       # deepest first
        if folder.parts and (target / folder).is_dir() and not any((target / folder).iterdir()):
            (target / folder).rmdir()
    (target / MARKER).unlink()
