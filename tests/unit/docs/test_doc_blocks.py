"""The code blocks of the README and docs/: each says what it is, each runnable one is run or
says why not, and the runner (tests/doc_blocks.py) does what tests/e2e/test_docs.py needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.doc_blocks import (
    CLIENT_EXAMPLE,
    MAKE_UP_PORTS,
    RUNNABLE,
    SHOWN,
    Block,
    all_blocks,
    blocks,
    commands,
    for_stack,
    shell_script,
)

BLOCKS = all_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_every_block_says_what_it_is(block: Block) -> None:
    assert block.info in (*RUNNABLE, *SHOWN), (
        f"{block.name}: a fenced block's info string must be one of {RUNNABLE + SHOWN}, "
        f"not {block.info!r} (console: a transcript with output; text: a picture or tree)"
    )


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.info in RUNNABLE], ids=lambda block: block.name
)
def test_every_runnable_block_is_run_or_says_why_not(block: Block) -> None:
    if block.runner is None:
        assert block.not_run_reason, (
            f"{block.name}: run it (no comment above it), or say why it cannot run against "
            f"`make up` on the line above: <!-- not run: why --> (found {block.marker!r})"
        )


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.info == "sh"], ids=lambda block: block.name
)
def test_shell_blocks_make_valid_scripts(block: Block) -> None:
    script = shell_script(block.code, first_line=block.line + 1)
    done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, f"{block.name}: {done.stderr}"


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.info == "python"], ids=lambda block: block.name
)
def test_python_blocks_compile(block: Block) -> None:
    compile(block.code, block.name, "exec")


def test_the_readme_tries_it_and_has_its_client_example() -> None:
    readme = [b for b in BLOCKS if b.path.name == "README.md" and b.path.parent.name != "docs"]
    assert [b.runner for b in readme if b.marker == CLIENT_EXAMPLE] == ["tests/e2e/test_readme.py"]
    tried = [b for b in readme if b.runner == "tests/e2e/test_docs.py"]
    assert tried and "CreateOrder" in tried[0].code
    assert sum(b.runner == "tests/e2e/test_docs.py" for b in BLOCKS) >= 3


# -- the parser -----------------------------------------------------------------------------

PAGE = """# A page

Inline `<!-- not run: no -->` is prose, not a marker.

```sh
echo run
```

<!-- not run: streams forever -->

```sh
tail -f log
```

<!-- client-example:start -->
```python
print("hello")
```
<!-- client-example:end -->

```text
a picture
```
"""


def test_blocks_are_found_with_the_comment_above_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    found = blocks(page)
    assert [(b.line, b.info, b.marker) for b in found] == [
        (5, "sh", None),
        (11, "sh", "not run: streams forever"),
        (16, "python", CLIENT_EXAMPLE),
        (21, "text", "client-example:end"),
    ]
    assert found[0].code == "echo run\n"
    assert found[1].not_run_reason == "streams forever"
    assert [b.runner for b in found] == [
        "tests/e2e/test_docs.py",
        None,
        "tests/e2e/test_readme.py",
        None,
    ]


def test_an_unclosed_block_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\necho never closed\n")
    with pytest.raises(ValueError, match="never closed"):
        blocks(page)


def test_make_up_addresses_become_the_stack_ones() -> None:
    stack = {name: f"127.0.0.1:{4000 + i}" for i, name in enumerate(MAKE_UP_PORTS.values())}
    code = "grpcurl 127.0.0.1:50051 127.0.0.1:50052; curl 127.0.0.1:9101/m 127.0.0.1:9102/m"
    assert for_stack(code, stack) == (
        "grpcurl 127.0.0.1:4000 127.0.0.1:4001; curl 127.0.0.1:4002/m 127.0.0.1:4003/m"
    )
    assert for_stack("127.0.0.1:501510", stack) == "127.0.0.1:501510"


def test_commands_join_continuations_and_take_the_promised_error() -> None:
    code = (
        "# a comment\n"
        "echo one \\\n"
        "  two\n"
        "\n"
        "call bad\n"
        "#   Code: NotFound   Message: product 999 does not exist ...\n"
        "call worse\n"
        "#   Code: InvalidArgument\n"
    )
    found = commands(code, first_line=10)
    assert [(c.line, c.text) for c in found] == [
        (11, "echo one \\\n  two"),
        (14, "call bad"),
        (16, "call worse"),
    ]
    assert (found[0].expected_code, found[0].expected_message) == (None, None)
    assert (found[1].expected_code, found[1].expected_message) == (
        "NotFound",
        "product 999 does not exist",
    )
    assert (found[2].expected_code, found[2].expected_message) == ("InvalidArgument", None)


# -- the shell runner -----------------------------------------------------------------------

FAIL_NOT_FOUND = (
    "sh -c 'printf \"ERROR:\\n  Code: NotFound\\n  Message: no such thing\\n\" >&2; exit 69'"
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    script = shell_script(code, first_line=100)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


def test_commands_run_in_one_shell() -> None:
    done = run('x=$(echo 41)\nexport Y=1\n[ "$x" = 41 ] && [ "$Y" = 1 ]\necho "done $x"\n')
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 41\n"


def test_the_first_failing_command_fails_the_block() -> None:
    done = run("true\nfalse\necho never\n")
    assert done.returncode == 1
    assert "docs line 101: exited with status 1" in done.stderr
    assert "never" not in done.stdout


def test_a_failing_pipe_fails_the_block() -> None:
    done = run("echo something | grep nothing\n")
    assert done.returncode == 1


def test_a_promised_error_passes_when_it_happens() -> None:
    done = run(f"{FAIL_NOT_FOUND}\n#   Code: NotFound   Message: no such ...\necho after\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "after\n"
    assert "Message: no such thing" in done.stderr


def test_a_promised_error_that_does_not_happen_fails() -> None:
    done = run("true\n#   Code: NotFound   Message: no such thing\n")
    assert done.returncode == 1
    assert "succeeded, but the docs say it fails with Code: NotFound" in done.stderr


def test_another_error_than_the_promised_one_fails() -> None:
    done = run(f"{FAIL_NOT_FOUND}\n#   Code: NotFound   Message: something else\n")
    assert done.returncode == 1
    assert "its error does not say 'something else'" in done.stderr
    done = run(f"{FAIL_NOT_FOUND}\n#   Code: InvalidArgument\n")
    assert done.returncode == 1
