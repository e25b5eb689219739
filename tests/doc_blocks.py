"""The code blocks of the README and docs/: found, told apart, and made runnable.

Every fenced block says what it is (` ```sh `, ` ```python `, ` ```console ` for a transcript
with its output, ` ```text ` for pictures and trees). A `sh` or `python` block is run against
a stack like `make up`'s by tests/e2e/test_docs.py, unless the line above it (blank lines
aside) is an HTML comment that says otherwise:

    <!-- not run: why it cannot run against `make up` -->
    <!-- client-example:start -->      (the README's snippet: tests/e2e/test_readme.py runs it)

A shell block runs in bash from the repository's root, one command per line (a trailing
backslash continues it), and every command must succeed, except one followed by a comment
`#   Code: <gRPC code>   Message: <text>`: that one must fail and print both (a message
ending in `...` is a prefix).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Info strings of blocks that run.
RUNNABLE = ("sh", "python")
#: Info strings of blocks that never run: a transcript with its output, a picture or tree.
SHOWN = ("console", "text")
NOT_RUN = "not run:"
#: The README's client snippet, run by tests/e2e/test_readme.py.
CLIENT_EXAMPLE = "client-example:start"

_FENCE = re.compile(r"^```(?P<info>\S*)\s*$")
_COMMENT = re.compile(r"^<!--\s*(?P<text>.*?)\s*-->$")
_EXPECTED_ERROR = re.compile(r"^#\s+Code:\s*(?P<code>\w+)(?:\s+Message:\s*(?P<message>.*?))?\s*$")
#: The ports `make up` serves on (replica 0), as the docs write them: port -> what.
MAKE_UP_PORTS = {
    "50051": "order",
    "50052": "payment",
    "9101": "order-metrics",
    "9102": "payment-metrics",
    # The worker processes of the default split layout (the ports + 10).
    "50061": "order-worker",
    "50062": "payment-worker",
    "9111": "order-worker-metrics",
    "9112": "payment-worker-metrics",
}
_ADDRESS = re.compile(r"127\.0\.0\.1:(" + "|".join(MAKE_UP_PORTS) + r")\b")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its info string, its text, and the comment above it."""

    path: Path
    #: Line of the opening fence (1-based).
    line: int
    info: str
    code: str
    #: The HTML comment on the line above (blank lines aside), without `<!--` and `-->`.
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def not_run_reason(self) -> str | None:
        """Why the block does not run (`<!-- not run: why -->`), or None."""
        if self.marker is None or not self.marker.startswith(NOT_RUN):
            return None
        return self.marker.removeprefix(NOT_RUN).strip()

    @property
    def runner(self) -> str | None:
        """The test that runs this block, or None (a shown block, or one marked not run)."""
        if self.info not in RUNNABLE:
            return None
        if self.marker is None:
            return "tests/e2e/test_docs.py"
        if self.marker == CLIENT_EXAMPLE:
            return "tests/e2e/test_readme.py"
        return None


def doc_files() -> list[Path]:
    """The README and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of one markdown file, in order."""
    return list(_parse(path, path.read_text().splitlines()))


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks(path)]


def _parse(path: Path, lines: list[str]) -> Iterator[Block]:
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: a fenced block that is never closed")
        yield Block(
            path=path,
            line=index + 1,
            info=opening["info"],
            code="\n".join(lines[index + 1 : end]) + "\n",
            marker=_marker_above(lines, index),
        )
        index = end + 1


def _marker_above(lines: list[str], fence: int) -> str | None:
    above = fence - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    if above < 0:
        return None
    comment = _COMMENT.match(lines[above].strip())
    return comment["text"] if comment else None


def for_stack(code: str, addresses: Mapping[str, str]) -> str:
    """`code` with `make up`'s addresses replaced by a stack's: `addresses` maps each value
    of MAKE_UP_PORTS to an address, e.g. {"order": "127.0.0.1:4711", ...}."""
    return _ADDRESS.sub(lambda found: addresses[MAKE_UP_PORTS[found[1]]], code)


@dataclass(frozen=True)
class Command:
    """One shell command of a block, and the failure the docs promise for it, if any."""

    #: Line in the markdown file where it starts.
    line: int
    text: str
    expected_code: str | None = None
    expected_message: str | None = None


def commands(code: str, first_line: int = 1) -> list[Command]:
    """The commands of a shell block (`first_line`: the markdown line of its first line)."""
    found: list[Command] = []
    lines = code.splitlines()
    index = 0
    while index < len(lines):
        start, text = index, lines[index]
        while text.endswith("\\") and index + 1 < len(lines):
            index += 1
            text = text + "\n" + lines[index]
        index += 1
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            expected = _EXPECTED_ERROR.match(stripped)
            if expected and found and found[-1].expected_code is None:
                message = (expected["message"] or "").strip().removesuffix("...").strip()
                last = found[-1]
                found[-1] = Command(last.line, last.text, expected["code"], message or None)
            continue
        found.append(Command(first_line + start, text))
    return found


def shell_script(code: str, first_line: int = 1) -> str:
    """A bash script that runs the block's commands in order, in one shell, and exits 1 at
    the first one that does not do what the docs say (its line in stderr)."""
    out = [
        "set -u -o pipefail",
        "__doc_err=$(mktemp)",
        "trap 'rm -f \"$__doc_err\"' EXIT",
        '__doc_fail() { printf \'docs line %s: %s\\n\' "$1" "$2" >&2; exit 1; }',
    ]
    for command in commands(code, first_line):
        out.append(f"printf '+ %s\\n' {shlex.quote(command.text)} >&2")
        if command.expected_code is None:
            out += [
                command.text,
                f'__rc=$?; [ "$__rc" -eq 0 ] || __doc_fail {command.line} '
                '"exited with status $__rc"',
            ]
            continue
        promised = f"Code: {command.expected_code}"
        out += [
            "{ " + command.text,
            '} 2>"$__doc_err"; __rc=$?',
            'cat "$__doc_err" >&2',
            f'[ "$__rc" -ne 0 ] || __doc_fail {command.line} '
            + shlex.quote(f"succeeded, but the docs say it fails with {promised}"),
        ]
        for text in (promised, command.expected_message):
            if text:
                out.append(
                    f'grep -qF -- {shlex.quote(text)} "$__doc_err" || __doc_fail {command.line} '
                    + shlex.quote(f"its error does not say {text!r}")
                )
    return "\n".join(out) + "\n"
