"""Our architecture generators against the official cfg and YAML files, block by block.

The official files are read here as independent data; if a width, stride,
route or repeat count of any variant were off, the comparison would show it.
"""

import pytest
import yaml

from yolor_keras.models import PRESETS
from yolor_keras.models.darknet_architecture import darknet_blocks
from yolor_keras.models.yaml_architecture import resolved_rows


def parse_cfg(path):
    """A minimal darknet cfg reader: sections and key=value lines, [net] dropped."""
    blocks = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            blocks.append({"type": line[1:-1]})
        else:
            key, value = line.split("=", 1)
            blocks[-1][key.strip()] = value.strip()
    assert blocks[0]["type"] == "net"
    return blocks[1:]


def _ints(text):
    return [int(v) for v in text.split(",")]


def normalise_official(blocks):
    """The fields that define the network, with relative indices made absolute."""
    out = []
    for i, block in enumerate(blocks):
        kind = block["type"]
        entry = {"type": kind}
        if kind == "convolutional":
            assert block["pad"] == "1"
            entry.update(
                filters=int(block["filters"]),
                size=int(block["size"]),
                stride=int(block["stride"]),
                batch_normalize=int(block.get("batch_normalize", 0)),
                activation=block["activation"],
            )
        elif kind == "route":
            entry["layers"] = [i + v if v < 0 else v for v in _ints(block["layers"])]
        elif kind in ("shortcut", "shift_channels", "control_channels"):
            value = int(block["from"])
            entry["from"] = i + value if value < 0 else value
        elif kind == "maxpool":
            entry.update(size=int(block["size"]), stride=int(block["stride"]))
        elif kind == "upsample":
            entry["stride"] = int(block["stride"])
        elif kind in ("implicit_add", "implicit_mul"):
            entry["filters"] = int(block["filters"])
        elif kind == "yolo":
            entry.update(
                mask=_ints(block["mask"]),
                anchors=_ints(block["anchors"]),
                classes=int(block["classes"]),
            )
        elif kind != "reorg":
            raise AssertionError(f"unexpected block type {kind}")
        out.append(entry)
    return out


def _ours(name, **kwargs):
    blocks, _ = darknet_blocks(PRESETS[name]["architecture"], **kwargs)
    for block in blocks:
        if block["type"] == "yolo":
            block["anchors"] = [int(v) for v in block["anchors"]]
    return blocks


def _assert_same_blocks(official, ours):
    assert len(ours) == len(official)
    for index, (expected, got) in enumerate(zip(official, ours)):
        assert got == expected, f"block {index}: official {expected}, ours {got}"


@pytest.mark.parametrize("name", ["yolor_csp", "yolor_csp_x", "yolor_p6", "yolor_w6"])
def test_main_branch_blocks_match_official_cfg(name, reference_dir):
    official = normalise_official(parse_cfg(reference_dir / "main" / f"{name}.cfg"))
    _assert_same_blocks(official, _ours(name))


@pytest.mark.parametrize(
    "name, cfg, blocks", [("yolor_p6", "tiny_yolor_p6", 235), ("yolor_csp", "tiny_yolor_csp", 188)]
)
def test_width_rule_reproduces_the_tiny_fixture_cfgs(name, cfg, blocks, fixtures_dir):
    official = normalise_official(parse_cfg(fixtures_dir / f"{cfg}.cfg"))
    assert len(official) == blocks
    _assert_same_blocks(official, _ours(name, num_classes=3, width_multiplier=0.125))


def _official_rows(path):
    model = yaml.safe_load(path.read_text())
    return model, resolved_rows(model)


@pytest.mark.parametrize(
    "name, file, width_multiple",
    [
        ("yolor_p6_paper", "yolor-p6", 1.0),
        ("yolor_w6_paper", "yolor-w6", 1.0),
        ("yolor_e6_paper", "yolor-e6", 1.25),
        ("yolor_d6_paper", "yolor-d6", 1.25),
    ],
)
def test_paper_branch_rows_match_official_yaml(name, file, width_multiple, reference_dir):
    official, rows = _official_rows(reference_dir / "paper" / f"{file}.yaml")
    ours = PRESETS[name]["architecture"]
    assert resolved_rows(ours) == rows
    assert len(ours["backbone"]) == len(official["backbone"])
    assert ours["anchors"] == official["anchors"]
    assert official["width_multiple"] == ours["width_multiple"] == width_multiple
    assert official["depth_multiple"] == ours["depth_multiple"] == 1.0


def test_tiny_paper_yaml_is_the_p6_preset_with_multiples(fixtures_dir):
    official, rows = _official_rows(fixtures_dir / "tiny_yolor-p6.yaml")
    assert resolved_rows(PRESETS["yolor_p6_paper"]["architecture"]) == rows
    assert (official["nc"], official["depth_multiple"], official["width_multiple"]) == (
        3,
        0.33,
        0.125,
    )
