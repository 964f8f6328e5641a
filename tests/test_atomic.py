"""Tests of `yolor_keras.atomic`: a reader sees the old artefact or the new one, never half.

Each failure is injected at a different step (inside the writer, in the
check, at the rename, and a real kill of the writing process) and the
previous artefact must come out byte-identical, with no hidden temporary
left beside it.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from yolor_keras import atomic
from yolor_keras.atomic import write_directory_atomically
from yolor_keras.atomic import write_file_atomically

OLD = b"old artefact\n" * 100
NEW = b"new artefact\n" * 300


def tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                found[os.path.relpath(path, folder)] = file.read()
    return found


def write_tree(contents):
    def write(folder):
        for relative, data in contents.items():
            path = os.path.join(folder, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as file:
                file.write(data)

    return write


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# ----------------------------------------------------------------- files


def test_file_is_replaced_and_the_writer_sees_a_hidden_sibling_with_the_extension(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(OLD)
    seen = []

    def write(temporary):
        seen.append(temporary)
        # The destination still holds the old bytes while the new are written.
        assert target.read_bytes() == OLD
        with open(temporary, "wb") as file:
            file.write(NEW)

    assert write_file_atomically(str(target), write) == str(target)
    assert target.read_bytes() == NEW
    [temporary] = seen
    assert os.path.dirname(temporary) == str(tmp_path)
    assert os.path.basename(temporary).startswith(".") and temporary.endswith(".tflite")
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_crash_inside_the_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(OLD)

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(NEW[:50])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file_atomically(target, write)
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_failing_check_runs_on_the_complete_copy_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(OLD)
    checked = []

    def check(temporary):
        with open(temporary, "rb") as file:
            checked.append(file.read())
        raise RuntimeError("outputs NaN")

    with pytest.raises(RuntimeError, match="outputs NaN"):
        write_file_atomically(
            target, lambda temporary: open(temporary, "wb").write(NEW), check=check
        )
    assert checked == [NEW]
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_failing_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.tflite"
    target.write_bytes(OLD)

    def broken_replace(source, destination):
        raise OSError("rename failed")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_file_atomically(target, lambda temporary: open(temporary, "wb").write(NEW))
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_a_writer_that_leaves_a_folder_is_cleaned_up(tmp_path):
    # Some savers replace the path they are given by a folder; the failure
    # they then raise must not be hidden by the clean-up.
    target = tmp_path / "model.keras"
    target.write_bytes(OLD)

    def write(temporary):
        os.remove(temporary)
        os.makedirs(os.path.join(temporary, "inner"))
        raise ValueError("saver failed")

    with pytest.raises(ValueError, match="saver failed"):
        write_file_atomically(target, write)
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["model.keras"]


def test_new_file_gets_the_usual_permissions(tmp_path, umask_022):
    # mkstemp creates 0600 files; an export must be readable like any file.
    target = tmp_path / "new" / "model.onnx"
    write_file_atomically(target, lambda temporary: open(temporary, "wb").write(NEW))
    assert target.read_bytes() == NEW
    assert os.stat(target).st_mode & 0o777 == 0o644


def test_killed_writer_leaves_the_old_file(tmp_path):
    """A real crash: the writing process is killed with SIGKILL mid-write."""
    target = tmp_path / "model.tflite"
    target.write_bytes(OLD)
    started = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location("atomic", {atomic.__file__!r})
        atomic = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(atomic)

        def write(temporary):
            with open(temporary, "wb") as file:
                file.write(b"partial")
                file.flush()
                open({str(started)!r}, "w").close()
                time.sleep(60)

        atomic.write_file_atomically({str(target)!r}, write)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 30
        while not started.exists():
            assert process.poll() is None and time.time() < deadline, "writer did not start"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert target.read_bytes() == OLD
    # The killed writer's partial file is hidden (a dot name, not the target).
    leftovers = sorted(set(os.listdir(tmp_path)) - {"model.tflite", "started"})
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.partial-")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_unwritable_folder_fails_before_touching_the_old_file(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(OLD)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(PermissionError):
            write_file_atomically(target, lambda temporary: open(temporary, "wb").write(NEW))
    finally:
        os.chmod(tmp_path, 0o755)
    assert target.read_bytes() == OLD


# --------------------------------------------------------------- folders


def test_folder_does_not_exist_until_it_is_complete(tmp_path):
    target = tmp_path / "tiny" / "1"
    during = []

    def write(folder):
        write_tree({"saved_model.pb": NEW, "variables/variables.index": OLD})(folder)
        during.append((os.path.exists(target), os.path.basename(folder)))

    write_directory_atomically(target, write)
    [(existed, name)] = during
    assert not existed
    # TF Serving takes numeric folder names as versions; the temporary is not one.
    assert name.startswith(".") and not name.isdigit()
    assert tree(target) == {
        "saved_model.pb": NEW,
        os.path.join("variables", "variables.index"): OLD,
    }
    assert os.listdir(tmp_path / "tiny") == ["1"]


def test_replacing_a_folder_swaps_its_whole_contents(tmp_path):
    target = tmp_path / "3"
    write_tree({"saved_model.pb": OLD, "old_only.txt": OLD})(target)
    write_directory_atomically(target, write_tree({"saved_model.pb": NEW, "new/inner.bin": NEW}))
    assert tree(target) == {"saved_model.pb": NEW, os.path.join("new", "inner.bin"): NEW}
    assert os.listdir(tmp_path) == ["3"]


def test_replaced_folder_never_disappears(tmp_path, monkeypatch):
    """Linux swaps the folders in one step; two renames leave a gap a poller can see."""
    if hasattr(atomic, "_exchange"):
        probe_a, probe_b = tmp_path / "probe_a", tmp_path / "probe_b"
        probe_a.mkdir()
        probe_b.mkdir()
        if not atomic._exchange(str(probe_a), str(probe_b)):
            pytest.skip("this system cannot swap two folders in one step")
        probe_a.rmdir()
        probe_b.rmdir()
    target = tmp_path / "3"
    write_tree({"saved_model.pb": OLD})(target)
    gaps = []
    real_replace = os.replace

    def watched_replace(source, destination):
        real_replace(source, destination)
        if not os.path.exists(target):
            gaps.append((source, destination))

    def write(folder):
        # Readers still get the complete old version while the new one is written.
        assert tree(target) == {"saved_model.pb": OLD}
        write_tree({"saved_model.pb": NEW})(folder)

    monkeypatch.setattr(atomic.os, "replace", watched_replace)
    write_directory_atomically(target, write)
    assert gaps == []
    assert tree(target) == {"saved_model.pb": NEW}
    assert os.listdir(tmp_path) == ["3"]


def test_failing_check_keeps_the_old_folder(tmp_path):
    target = tmp_path / "3"
    write_tree({"saved_model.pb": OLD, "variables/data": OLD})(target)
    before = tree(target)
    checked = []

    def check(folder):
        checked.append(tree(folder))
        raise RuntimeError("does not load")

    with pytest.raises(RuntimeError, match="does not load"):
        write_directory_atomically(target, write_tree({"saved_model.pb": NEW}), check=check)
    assert checked == [{"saved_model.pb": NEW}]
    assert tree(target) == before
    assert os.listdir(tmp_path) == ["3"]


def test_crash_inside_the_folder_writer_keeps_the_old_folder(tmp_path):
    target = tmp_path / "3"
    write_tree({"saved_model.pb": OLD})(target)

    def write(folder):
        write_tree({"saved_model.pb": NEW[:10]})(folder)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_directory_atomically(target, write)
    assert tree(target) == {"saved_model.pb": OLD}
    assert os.listdir(tmp_path) == ["3"]


def test_failing_final_rename_restores_the_old_folder(tmp_path, monkeypatch):
    """The fallback path (no one-step swap): the second rename fails."""
    monkeypatch.setattr(atomic, "_exchange", lambda first, second: False, raising=False)
    target = tmp_path / "3"
    write_tree({"saved_model.pb": OLD})(target)
    real_replace = os.replace

    def replace(source, destination):
        if os.path.basename(source).startswith(".3.partial-"):
            raise OSError("rename failed")
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        write_directory_atomically(target, write_tree({"saved_model.pb": NEW}))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert tree(target) == {"saved_model.pb": OLD}
    assert os.listdir(tmp_path) == ["3"]


def test_new_folder_gets_the_usual_permissions(tmp_path, umask_022):
    # mkdtemp creates 0700 folders; TF Serving may run as another user.
    target = tmp_path / "tiny" / "1"
    write_directory_atomically(target, write_tree({"saved_model.pb": NEW}))
    assert os.stat(target).st_mode & 0o777 == 0o755
