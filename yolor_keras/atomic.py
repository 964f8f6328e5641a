"""Writing artefacts so that a reader never sees half of one.

Every file or folder the package produces (converted `.keras` models, training
checkpoints, SavedModel version folders, `.tflite` and `.onnx` files) goes
through these two functions. Each writes into a hidden temporary sibling,
flushes it to disk, runs an optional check on the finished temporary copy,
and only then renames it into place. A crash, an exception or a failed check
leaves the previous artefact as it was and removes the partial one.

TF Serving polls a model folder for numeric version folders; the temporary
sibling's name starts with a dot and is not numeric, so the server never
loads a version that is still being written.
"""

import os
import shutil
import tempfile


def _fsync_path(path):
    """Flushes a file, or a folder's entries, to disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        # Some file systems (and folders on some platforms) cannot be synced.
        pass
    finally:
        os.close(descriptor)


def _fsync_tree(root):
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync_path(os.path.join(directory, name))
        _fsync_path(directory)


def _apply_umask(path, mode):
    # mkstemp/mkdtemp create private entries; give them the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def write_file_atomically(path, write, check=None):
    """Produces the file ``path`` by ``write(temporary_path)``, then renames it.

    Args:
        path: the destination file.
        write: called with a temporary path in the same folder, which keeps
            ``path``'s extension (Keras and converters pick the format from it).
        check: optional, called with the temporary path after ``write``; it
            raises to refuse the result, and ``path`` is then left untouched.

    Returns:
        ``path``.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, extension = os.path.splitext(name)
    if name.endswith(".tar.gz"):
        extension = ".tar.gz"
    handle, temporary = tempfile.mkstemp(prefix=f".{stem}.partial-", suffix=extension, dir=directory)
    os.close(handle)
    try:
        write(temporary)
        if check is not None:
            check(temporary)
        _apply_umask(temporary, 0o666)
        _fsync_path(temporary)
        os.replace(temporary, path)
        _fsync_path(directory)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_directory_atomically(path, write, check=None):
    """Produces the folder ``path`` by ``write(temporary_folder)``, then renames it.

    A folder cannot replace a non-empty folder in one rename, so an existing
    ``path`` is first moved to a hidden backup, the new folder renamed into
    place, and the backup deleted. If the second rename fails the backup is
    moved back, so ``path`` always holds a complete artefact.

    Args:
        path: the destination folder.
        write: called with an existing, empty temporary folder beside ``path``.
        check: optional, called with the temporary folder after ``write``; it
            raises to refuse the result.

    Returns:
        ``path``.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    backup = None
    try:
        write(temporary)
        if check is not None:
            check(temporary)
        _apply_umask(temporary, 0o777)
        _fsync_tree(temporary)
        if os.path.lexists(path):
            backup = tempfile.mkdtemp(prefix=f".{name}.previous-", dir=parent)
            os.rmdir(backup)
            os.replace(path, backup)
        try:
            os.replace(temporary, path)
        except BaseException:
            if backup is not None:
                os.replace(backup, path)
                backup = None
            raise
        _fsync_path(parent)
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        if backup is not None and os.path.lexists(backup):
            shutil.rmtree(backup, ignore_errors=True)
    return path
