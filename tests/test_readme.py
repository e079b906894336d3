"""Every Python example in the README runs as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert EXAMPLES, "README.md has no ```python examples"


#: A line ``print(...)  # shown``: the comment states what the call prints.
PRINTED = re.compile(r"^print\(.*\)  # (.*)$")


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs_and_prints_what_it_says(index, capsys):
    """Each example runs, and each ``print`` with a comment prints that
    comment as a line of its own (for a comment ``... = value``, the value),
    in the order of the prints.  Prose about a print goes on the line above it."""
    exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), {"__name__": "__readme__"})
    printed = iter(capsys.readouterr().out.splitlines())
    for match in map(PRINTED.match, EXAMPLES[index].splitlines()):
        if match:
            shown = match.group(1)
            assert any(line == shown or shown.endswith(f" = {line}") for line in printed), (
                f"README example {index}: no line {shown!r} printed, in order"
            )
