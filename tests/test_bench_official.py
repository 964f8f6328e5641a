"""Tests of the official PyTorch rows of `python -m yolor_keras.bench --official DIR`.

The fast tests inject a stand-in for the child process: they check the
argument handling, how the child's JSON becomes rows, the GFLOP/s and
share-of-peak arithmetic and the ours / official ratios against hand-computed
values. The slow test runs the real child script on a tiny stand-in of the
official code's ``Darknet``.
"""

import json
import subprocess
import textwrap

import pytest

from yolor_keras import bench

PEAKS = {"fp32": 200.0, "bf16": 400.0}
GFLOPS = 80.0


def _checkout(tmp_path, presets=("yolor_p6",)):
    """A folder shaped like the official checkout: models/models.py and cfg/<preset>.cfg."""
    (tmp_path / "models").mkdir(parents=True)
    (tmp_path / "models" / "models.py").write_text("# stand-in\n")
    (tmp_path / "cfg").mkdir()
    for preset in presets:
        (tmp_path / "cfg" / f"{preset}.cfg").write_text("[net]\n")
    return tmp_path


def _child_result(plain=0.5, fused=0.4, bf16=0.2, bf16_error=None):
    return {
        "torch": "2.13.0+cpu",
        "threads": 2,
        "omp_wait_policy": "PASSIVE",
        "parameters": 37265016,
        "gflops": 81.3,
        "rows": [
            {"kind": "plain", "seconds": plain, "error": None},
            {"kind": "fused_cl", "seconds": fused, "error": None},
            {"kind": "bf16_fused_cl", "seconds": None if bf16_error else bf16, "error": bf16_error},
        ],
    }


def _row(path, precision, seconds, error=None):
    return {
        "path": path,
        "precision": precision,
        "seconds": seconds,
        "gflops_per_s": None if error else GFLOPS / seconds,
        "share_of_peak": None if error else GFLOPS / seconds / PEAKS[precision],
        "error": error,
    }


# Ours: the fastest fp32 path is folded fp32 (0.6 s), the fastest bf16 path
# folded bf16 (0.3 s); a failed path with no time must be ignored.
OURS = [
    _row("keras fp32", "fp32", 0.8),
    _row("folded fp32", "fp32", 0.6),
    _row("folded fp32+XLA", "fp32", None, error="InternalError: no XLA"),
    _row("folded bf16", "bf16", 0.3),
    _row("saved_model bf16", "bf16", 0.35),
]


def test_without_official_or_torch_the_bench_says_why_in_one_line(tmp_path, monkeypatch):
    line = bench.official_unavailable(None)
    assert "--official DIR" in line and "\n" not in line
    checkout = _checkout(tmp_path)
    real_find_spec = bench.importlib.util.find_spec
    monkeypatch.setattr(
        bench.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real_find_spec(name, *a),
    )
    line = bench.official_unavailable(str(checkout))
    assert "torch is not installed" in line and "\n" not in line


def test_a_usable_checkout_is_accepted_and_a_wrong_folder_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name, *a: object())
    assert bench.official_unavailable(str(_checkout(tmp_path / "yolor"))) is None
    with pytest.raises(ValueError, match="models/models.py"):
        bench.official_unavailable(str(tmp_path / "missing"))


def test_command_line_refuses_bad_official_options(tmp_path):
    # All refused by the parser, before TensorFlow is imported or anything is timed.
    with pytest.raises(SystemExit):
        bench.main(["--official", str(tmp_path / "not_a_checkout")])
    with pytest.raises(SystemExit):
        bench.main(["models", "--official", str(_checkout(tmp_path))])
    with pytest.raises(SystemExit):
        bench.main(["--official-threads", "0"])


def test_child_output_is_parsed_from_its_result_line():
    payload = _child_result()
    stdout = "Model Summary: 665 layers\nFusing layers...\nRESULT " + json.dumps(payload) + "\n"
    assert bench.parse_official_output(stdout) == payload
    assert bench.parse_official_output("Traceback (most recent call last):\n") is None


def test_run_official_child_passes_settings_and_reports_failures(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"], seen["env"] = command, kwargs["env"]
        stdout = "noise\nRESULT " + json.dumps({"rows": []}) if seen.get("ok") else "boom"
        return subprocess.CompletedProcess(command, 1, stdout=stdout, stderr="Traceback: X")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    settings = {"threads": 3, "kinds": ["plain"]}
    with pytest.raises(RuntimeError, match="exit 1.*boomTraceback: X"):
        bench.run_official_child(settings)
    assert json.loads(seen["command"][-1]) == settings
    assert seen["env"]["OMP_NUM_THREADS"] == "3"
    assert seen["env"]["OMP_WAIT_POLICY"] == "PASSIVE"  # unless the user set it:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with pytest.raises(RuntimeError):
        bench.run_official_child(settings)
    assert seen["env"]["OMP_WAIT_POLICY"] == "ACTIVE"
    seen["ok"] = True
    assert bench.run_official_child(settings) == {"rows": []}


def test_official_rows_from_a_stub_child(tmp_path):
    checkout = _checkout(tmp_path)
    received = []

    def runner(settings):
        received.append(settings)
        return _child_result()

    result = bench.official_rows("yolor_p6", str(checkout), 640, PEAKS, GFLOPS, 7, 2, runner=runner)
    (settings,) = received
    assert settings["cfg"] == str(checkout / "cfg" / "yolor_p6.cfg")
    assert settings["kinds"] == ["plain", "fused_cl", "bf16_fused_cl"]
    assert (settings["image_size"], settings["repeats"], settings["threads"]) == (640, 7, 2)
    assert (result["torch"], result["threads"], result["gflops"]) == ("2.13.0+cpu", 2, 81.3)
    assert result["omp_wait_policy"] == "PASSIVE"
    rows = {row["path"]: row for row in result["rows"]}
    assert list(rows) == [label for label, _, _ in bench.OFFICIAL_PATHS]
    # 80 GFLOP in 0.5 s = 160 GFLOP/s = 80 % of the 200 GFLOP/s fp32 peak;
    # 80 / 0.2 = 400 GFLOP/s = 100 % of the 400 GFLOP/s bf16 peak.
    assert rows["official fp32"]["gflops_per_s"] == pytest.approx(160.0)
    assert rows["official fp32"]["share_of_peak"] == pytest.approx(0.8)
    assert rows["official fused+CL fp32"]["share_of_peak"] == pytest.approx(1.0)
    assert rows["official bf16 fused+CL"]["gflops_per_s"] == pytest.approx(400.0)
    assert rows["official bf16 fused+CL"]["share_of_peak"] == pytest.approx(1.0)
    assert all(row["error"] is None for row in rows.values())


def test_official_failures_become_rows_not_exceptions(tmp_path):
    checkout = _checkout(tmp_path)
    # One path failed inside the child: only that row says so.
    partial = bench.official_rows(
        "yolor_p6",
        str(checkout),
        640,
        PEAKS,
        GFLOPS,
        runner=lambda s: _child_result(bf16_error="RuntimeError: no bf16"),
    )
    assert [row["error"] for row in partial["rows"]] == [None, None, "RuntimeError: no bf16"]

    def crash(settings):
        raise RuntimeError("the official model failed (exit 1): ImportError")

    for name, runner in (("yolor_p6", crash), ("yolor_csp", lambda s: _child_result())):
        # A child that crashes, and a preset without a cfg in the checkout.
        result = bench.official_rows(name, str(checkout), 640, PEAKS, GFLOPS, runner=runner)
        assert result["error"]
        assert all(row["error"] == result["error"] for row in result["rows"])
        assert all(row["seconds"] is None for row in result["rows"])
        assert bench.compare_to_official(OURS, result) == []


def test_ratios_ours_over_official_match_the_hand_computed_ones():
    official = {
        "rows": [
            _row("official fp32", "fp32", 0.5),
            _row("official fused+CL fp32", "fp32", 0.4),
            _row("official bf16 fused+CL", "bf16", 0.2),
        ]
    }
    ratios = {
        c: (ours["path"], theirs["path"], r)
        for c, ours, theirs, r in bench.compare_to_official(OURS, official)
    }
    assert ratios == {
        "fp32 vs fp32": ("folded fp32", "official fp32", pytest.approx(0.6 / 0.5)),
        "fp32 vs fused+CL fp32": ("folded fp32", "official fused+CL fp32", pytest.approx(1.5)),
        "bf16 vs bf16": ("folded bf16", "official bf16 fused+CL", pytest.approx(1.5)),
        "best vs best": ("folded bf16", "official bf16 fused+CL", pytest.approx(1.5)),
    }


def test_table_prints_official_rows_and_ratios(capsys):
    official = {
        "torch": "2.13.0+cpu",
        "threads": 2,
        "omp_wait_policy": "PASSIVE",
        "parameters": 37265016,
        "gflops": 81.3,
        "error": None,
        "rows": [
            _row("official fp32", "fp32", 0.5),
            _row("official fused+CL fp32", "fp32", 0.4),
            _row("official bf16 fused+CL", "bf16", 0.25),
        ],
    }
    bench.print_path_rows("yolor_p6", 37265016, GFLOPS, OURS, official)
    lines = capsys.readouterr().out.splitlines()
    text = "\n".join(lines)
    assert (
        "torch 2.13.0+cpu, 2 threads, OMP_WAIT_POLICY=PASSIVE, 37,265,016 parameters, "
        "torch counts 81.3 GFLOPs" in text
    )
    official_fp32 = next(line for line in lines if line.strip().startswith("official fp32"))
    # 500 ms, 160 GFLOP/s, 80 % of peak, keras fp32 (0.8 s) / 0.5 s = 1.60x.
    assert official_fp32.split() == ["official", "fp32", "500", "160", "80%", "1.60x"]
    assert "folded fp32 600 ms / official fp32 500 ms = 1.20x" in text
    assert "folded bf16 300 ms / official bf16 fused+CL 250 ms = 1.20x" in text
    assert "folded fp32+XLA" in text and "failed: InternalError: no XLA" in text

    bench.print_path_rows("yolor_p6", 37265016, GFLOPS, OURS, bench.official_unavailable(None))
    assert "not measured (pass --official DIR" in capsys.readouterr().out


# A stand-in of the official `models/models.py`: one 3x3 conv (3 -> 4
# channels, padding 1) and a BatchNorm, with the official `fuse()` method
# name. On an 8x8 image it costs 8*8 * 4 * 3*9 = 6912 multiply-adds, 13824
# FLOP, the figure torch's counter must report.
_TINY_DARKNET = textwrap.dedent(
    """
    import torch

    class Darknet(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            assert open(cfg).read().startswith("[net]")
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn = torch.nn.BatchNorm2d(4)
            self.fused = False

        def fuse(self):
            self.fused = True

        def forward(self, x):
            return self.bn(self.conv(x)), None
    """
)


@pytest.mark.slow
def test_real_child_runs_a_stand_in_of_the_official_code(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    checkout = _checkout(tmp_path)
    (checkout / "models" / "models.py").write_text(_TINY_DARKNET)
    (checkout / "models" / "__init__.py").write_text("")
    result = bench.official_rows("yolor_p6", str(checkout), 8, PEAKS, GFLOPS, repeats=2, threads=1)
    assert result["error"] is None
    assert (result["threads"], result["parameters"]) == (1, 3 * 4 * 9 + 2 * 4)
    assert result["omp_wait_policy"] == "PASSIVE"
    assert result["gflops"] == pytest.approx(13824 / 1e9)
    for row in result["rows"]:
        assert row["error"] is None and row["seconds"] > 0, row
