"""`yolor train --cache`: the flag reaches `train` as the pipeline's cache choice."""

import argparse

import pytest

from yolor_keras.data.pipeline import parse_cache
from yolor_keras.training import cli


def parse(*flags):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["train", "--data", "d", *flags])


@pytest.mark.parametrize(
    "flags, kind",
    [
        ((), "memory"),
        (("--cache", "memory"), "memory"),
        (("--cache", "none"), None),
        (("--no-cache",), None),
        (("--cache", "disk:/tmp/decoded"), "disk"),
    ],
)
def test_cache_flag_becomes_the_pipeline_cache_choice(flags, kind):
    choice = parse_cache(cli.training_cache(parse(*flags)))
    assert choice.kind == kind
    if kind == "disk":
        assert choice.folder == "/tmp/decoded"


@pytest.mark.parametrize("value", ["ram", "disk:", "Memory"])
def test_unknown_cache_value_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match="--cache"):
        cli.training_cache(parse("--cache", value))


def test_cache_and_no_cache_together_are_refused():
    with pytest.raises(SystemExit):
        parse("--cache", "memory", "--no-cache")
