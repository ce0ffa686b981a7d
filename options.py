"""Command-line options made from tables of keys: the value types (booleans, frame rates, valid
ranges), --help text taken from the tables' own comments, and a parser whose errors are one line.

Nothing here knows the method; config.py builds its parser from its preset tables with it.
"""
import argparse
import ast
import functools
import io
import math
import os
import tokenize
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Range(NamedTuple):
    """Valid values of a numeric setting: finite, from low to high, each end closed unless
    marked open."""
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            return False
        return bool(math.isfinite(value)
                    and (value > self.low if self.low_open else value >= self.low)
                    and (value < self.high if self.high_open else value <= self.high))

    def text(self):
        if self.high == math.inf:
            return "positive and finite" if self.low_open else f"at least {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


def parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_rate(text):
    """A frame rate as a float: `25`, `29.97` or the exact ratio `30000/1001`."""
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a frame rate such as 25, 29.97 or 30000/1001, "
                                         f"got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a frame rate must be positive, got {text!r}")
    return value


def format_rate(fps):
    """A frame rate as parse_rate reads it back: 25, 29.97, or NTSC's exact 30000/1001."""
    ntsc = round(float(fps) * 1001)
    if ntsc % 1000 == 0 and math.isclose(ntsc / 1001, fps, rel_tol=1e-12) and ntsc % 1001:
        return f"{ntsc}/1001"
    return f"{float(fps):.10g}"


def show_value(value):
    """A setting as --help shows it: lists of more than six values by their ends and count."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [f"{float(x):g}" for x in np.asarray(value, dtype=np.float64).reshape(-1)]
        if len(values) > 6:
            return f"{' '.join(values[:2])} ... {values[-1]}, {len(values)} values"
        return " ".join(values) if values else "none"
    return '""' if value == "" else f"{value:g}" if isinstance(value, float) else str(value)


def source_comments(path, tables):
    """{key: comment} of the `key=value,  # comment` lines (one key on the line) of the dict(...)
    tables assigned to the names `tables` in the Python file `path`; the first comment wins."""
    return dict(_source_comments(os.fspath(path), tuple(tables)))


@functools.lru_cache(maxsize=8)
def _source_comments(path, tables):
    source = Path(path).read_text()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    keys_ending_on = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) in tables
                                                for target in node.targets):
            for call in ast.walk(node.value):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "dict":
                    for keyword in call.keywords:
                        keys_ending_on.setdefault(keyword.end_lineno, []).append(keyword.arg)
    described = {}
    for line in sorted(keys_ending_on):
        if len(keys_ending_on[line]) == 1 and line in comments:
            described.setdefault(keys_ending_on[line][0], comments[line])
    return described


# ----------------------------------------------------------------------------- the parser
class OneLineParser(argparse.ArgumentParser):
    """argparse that raises `error_type(message + hint)` for a bad flag instead of printing a usage
    dump and exiting."""

    def __init__(self, *args, error_type, hint="", **kwargs):
        super().__init__(*args, **kwargs)
        self.error_type, self.hint = error_type, hint

    def error(self, message):
        raise self.error_type(f"{message}{self.hint}")


def add_table_option(parser, key, default, help_text, short_flag=None, rate=False):
    """`--key` (and `short_flag`) typed after its table default: a frame rate (`rate`), a boolean
    (`--key true|false`), a list (`--key v1 v2 ...`), an int, a float or a string."""
    flags = [f"--{key}"] + ([short_flag] if short_flag else [])
    options = dict(help=help_text.replace("%", "%%"))
    if rate:
        parser.add_argument(*flags, type=parse_rate, metavar="FPS", **options)
    elif isinstance(default, bool):
        parser.add_argument(*flags, type=parse_bool, metavar="BOOL", **options)
    elif isinstance(default, (list, tuple, np.ndarray)):
        parser.add_argument(*flags, type=float, nargs="*", metavar="X", **options)
    elif isinstance(default, int):
        parser.add_argument(*flags, type=int, **options)
    elif isinstance(default, float):
        parser.add_argument(*flags, type=float, **options)
    else:
        parser.add_argument(*flags, type=str, **options)


def check_ranges(args, ranges, error_type):
    """Every key of `ranges` ({key: Range}) against its valid values, a list value by value;
    raises error_type with one line naming the key."""
    for key, valid in ranges.items():
        value = getattr(args, key)
        if isinstance(value, (list, tuple, np.ndarray)):
            bad = [x for x in np.asarray(value, dtype=object).reshape(-1) if not valid.holds(x)]
            if bad:
                raise error_type(f"--{key} values must each be {valid.text()}, got {bad[0]!r}")
        elif not valid.holds(value):
            raise error_type(f"--{key} must be {valid.text()}, got {value!r}")
