"""argparse value types shared by the `ddpm-fast` subcommands (each rejects bad text with a message naming it), and
their help formatter."""

from __future__ import annotations

import argparse
import math
import re

# Flags whose value is a comma-separated list that may start with a minus sign ("-1,0"); see attach_list_values.
LIST_FLAGS = ("--class-labels", "--data-range")
_NEGATIVE_START = re.compile(r"-\.?\d")


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def attach_list_values(argv: list[str]) -> list[str]:
    """argv with "--class-labels -1,0" written "--class-labels=-1,0". argparse takes a token that starts with "-"
    for another option unless it is a plain negative number, so "-1,0" after a list flag would be reported as a
    missing value; joined to its flag, it reaches the flag's own check, which says what is wrong with it."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token in LIST_FLAGS and index + 1 < len(argv) and _NEGATIVE_START.match(argv[index + 1]):
            joined.append(f"{token}={argv[index + 1]}")
            index += 2
            continue
        joined.append(token)
        index += 1
    return joined


def given_destinations(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options argv gives explicitly (a value equal to the default included), which a
    parsed namespace cannot tell from defaults: argv parsed again with every default suppressed."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(namespace))


_DEVICE = re.compile(r"auto|cpu(:\d+)?|cuda(:\d+)?")


def device(text: str) -> str:
    """--device's value, checked for its form at once (before torch is imported): auto, cpu, cuda or cuda:N."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def seed(text: str) -> int:
    value = _number(text, int, "an integer in [0, 2**63)")
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a finite number > 0")
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a finite number >= 0")
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def class_labels(text: str) -> list:
    """'3,3,5' → [3, 3, 5], 'cat,dog' → ['cat', 'dog']: class indices (integers >= 0) or class names (looked up in
    the names stored with the model once it is loaded), comma-separated."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices or names such as 3,3,5 or cat,dog, "
                                         f"got {text!r}")
    labels: list = []
    for part in parts:
        try:
            labels.append(int(part))
        except ValueError:
            labels.append(part)
    negative = [label for label in labels if isinstance(label, int) and label < 0]
    if negative:
        raise argparse.ArgumentTypeError(f"class indices must be >= 0, got {negative[0]} in {text}")
    return labels


def step_indices(text: str) -> tuple[int, ...]:
    """'0,2' → (0, 2): step indices (integers >= 0), comma-separated; '' → () (none)."""
    parts = [part.strip() for part in text.split(",")] if text.strip() else []
    try:
        indices = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step indices such as 0,2, got {text!r}") from None
    if any(index < 0 for index in indices):
        raise argparse.ArgumentTypeError(f"step indices must be >= 0, got {text!r}")
    return tuple(sorted(set(indices)))


def value_range(text: str) -> tuple[float, float]:
    """'0,1' → (0.0, 1.0): the range LOW,HIGH a data set's float values lie in (finite, LOW < HIGH)."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH: two finite numbers, LOW < HIGH, such as 0,1; got "
                                         f"{text!r}")
    return low, high


def finite_float(text: str) -> float:
    value = _number(text, float, "a finite number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def quantile(text: str) -> float:
    value = _number(text, float, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def probability(text: str) -> float:
    value = _number(text, float, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one line on stderr ("PROG: error: ...; see PROG --help") and exit
    status 2: no usage block above it. Subcommand parsers inherit the class. A flag is taken only as written:
    argparse's prefix matching would read a mistyped --num-sample as --num-samples, without a word."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and every option's default in its help unless the help already states it (or there
    is none to state: None, False, a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not shows_default(action) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def shows_default(action: argparse.Action) -> bool:
    default = action.default  # by identity: 0 and 0.0 are defaults worth showing, False (a flag's) is not
    return bool(action.option_strings) and default is not None and default is not False and \
        default != argparse.SUPPRESS


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """HelpFormatter for `parser`, and a help line for each option that has a default but no help text (argparse
    prints nothing for those, so their default would stay hidden)."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if action.help is None and shows_default(action):
            action.help = "(default: %(default)s)"
