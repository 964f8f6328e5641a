"""Keeps TensorFlow's native log lines out of the command line's output.

TensorFlow's C++ runtime writes informational lines (oneDNN, CPU features,
XLA, SavedModel loading, graph rewrites) straight to file descriptor 2, some
of them before its logging is initialised, so no environment variable
silences them all. `quiet_native_logs` points descriptor 2 at a pipe, drops
the lines that have the native log format, and forwards everything else.
Python's own `sys.stderr` (tracebacks, warnings, progress bars) is moved to
a copy of the original descriptor, so it never passes through the filter.
"""

import logging
import os
import re
import sys
import threading

# absl/glog lines: "I0000 00:00:1796121062.151823    8232 port.cc:153] ...",
# with severity I(nfo) or W(arning); errors and fatal lines stay visible.
_NATIVE_LINE = re.compile(rb"^[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] ")
# Error-level lines that only report a harmless fallback: a kernel that
# falls back to another one, or a converter attribute older runtimes ignore.
_HARMLESS_ERROR = re.compile(
    rb"^E\d{4} [^\]]+\] (oneDNN supports .* only on platforms with"
    rb"|NodeDef mentions attribute \w+ which is not in the op definition)"
)
_NOISE = (
    b"INFO: Created TensorFlow Lite XNNPACK delegate",
    b"fully_quantize: ",  # the TFLite quantizer's settings, printed raw
    b"WARNING: All log messages before absl::InitializeLog() is called",
    b"To enable the following instructions:",
)

_installed = False


def _forward(read_end, target):
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        for line in iter(pipe.readline, b""):
            if _NATIVE_LINE.match(line) or _HARMLESS_ERROR.match(line) or line.startswith(_NOISE):
                continue
            try:
                os.write(target, line)
            except OSError:
                return


def quiet_native_logs(verbose=False):
    """Hides TensorFlow's informational native and Python log lines.

    Call it before TensorFlow is imported. With ``verbose`` (or the
    environment variable ``YOLOR_VERBOSE=1``) it changes nothing.
    """
    global _installed
    if verbose or os.environ.get("YOLOR_VERBOSE") == "1" or _installed:
        return
    _installed = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, AttributeError, ValueError):
        return  # no real descriptor 2 (embedded interpreters): leave it
    sys.stderr = os.fdopen(original, "w", buffering=1, errors="backslashreplace")
    threading.Thread(target=_forward, args=(read_end, original), daemon=True).start()
