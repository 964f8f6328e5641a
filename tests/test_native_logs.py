"""The command line hides TensorFlow's native log lines and nothing else."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    from yolor_keras.native_logs import quiet_native_logs
    quiet_native_logs(verbose=sys.argv[1] == "verbose")
    import tensorflow as tf
    tf.function(lambda x: x + 1)(tf.constant(1.0))
    print("own message", file=sys.stderr)
    raise SystemExit("own error")
    """
)


def _stderr(mode):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    return result.stderr


def test_quiet_mode_drops_native_lines_and_keeps_the_programs_own():
    stderr = _stderr("quiet")
    assert "own message" in stderr and "own error" in stderr
    assert "I0000" not in stderr and "absl::InitializeLog" not in stderr, stderr


def test_verbose_mode_keeps_native_lines():
    stderr = _stderr("verbose")
    # Without the filter TensorFlow 2.21 announces oneDNN at import time.
    assert "oneDNN" in stderr or "I0000" in stderr, stderr
    assert "own message" in stderr


@pytest.mark.parametrize("argv", [["--help"], ["convert", "--help"], ["export", "--help"]])
def test_cli_help_prints_no_native_lines(argv):
    result = subprocess.run(
        [sys.executable, "-m", "yolor_keras.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: yolor" in result.stdout
    assert "I0000" not in result.stderr and "oneDNN" not in result.stderr, result.stderr


def test_line_filter_drops_informational_lines_and_keeps_real_errors():
    from yolor_keras.native_logs import _HARMLESS_ERROR
    from yolor_keras.native_logs import _NATIVE_LINE

    stamp = b"00:00:1796129076.127260   18254"
    info = b"I0000 " + stamp + b" port.cc:153] oneDNN custom operations are on.\n"
    fallback = (
        b"E0000 "
        + stamp
        + b" util.cc:131] oneDNN supports DT_UINT8 only on platforms with AVX-512.\n"
    )
    failure = b"E0000 " + stamp + b" saver.cc:12] Could not open variables/variables.index\n"
    assert _NATIVE_LINE.match(info)
    assert _HARMLESS_ERROR.match(fallback)
    truncate = (
        b"E0000 " + stamp + b" node_def_util.cc:682] NodeDef mentions attribute Truncate"
        b" which is not in the op definition: Op<name=Identity>\n"
    )
    assert _HARMLESS_ERROR.match(truncate)
    assert not _NATIVE_LINE.match(failure) and not _HARMLESS_ERROR.match(failure)
    assert not _NATIVE_LINE.match(b"Epoch 1/40\n")


def test_raw_converter_lines_are_dropped_and_program_lines_forwarded():
    import os

    from yolor_keras import native_logs

    read_end, write_end = os.pipe()
    target_read, target_write = os.pipe()
    lines = [
        b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32\n",
        b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
        b"TFLite int8: model.tflite (1.8 MB)\n",
    ]
    os.write(write_end, b"".join(lines))
    os.close(write_end)
    native_logs._forward(read_end, target_write)
    os.close(target_write)
    with os.fdopen(target_read, "rb") as forwarded:
        assert forwarded.read() == b"TFLite int8: model.tflite (1.8 MB)\n"
