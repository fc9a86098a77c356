"""The command-line convention of every tool (`flax_style.cli`): absl flags, hyphens accepted,
one-line usage errors."""

import pytest
from absl import flags

from flax_style import cli


@pytest.fixture
def flag_values():
    values = flags.FlagValues()
    flags.DEFINE_string("output_dir", None, "folder", flag_values=values)
    flags.DEFINE_bool("preserve_color", False, "switch", flag_values=values)
    return values


@pytest.mark.parametrize(
    ("argv", "output_dir", "preserve_color"),
    [
        (["--output_dir=a", "--preserve_color"], "a", True),
        (["--output-dir", "b", "--preserve-color"], "b", True),
        (["--output-dir=c", "--no-preserve-color"], "c", False),
        (["--output_dir", "d", "--nopreserve_color"], "d", False),
    ],
)
def test_underscores_and_hyphens(flag_values, argv, output_dir, preserve_color):
    cli.parse(flag_values, argv, "tool", "about")
    assert (flag_values.output_dir, flag_values.preserve_color) == (output_dir, preserve_color)


@pytest.mark.parametrize("argv", [["--output-dirr=x"], ["--output_dir=x", "stray"]])
def test_mistakes_are_one_line_usage_errors(flag_values, argv):
    with pytest.raises(cli.UsageError) as error:
        cli.parse(flag_values, argv, "tool", "about")
    assert "\n" not in str(error.value) and "tool --help" in str(error.value)
