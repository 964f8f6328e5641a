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

import ctypes
import os
import shutil
import sys
import tempfile

# renameat2() arguments (linux/fcntl.h, linux/fs.h).
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


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


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _exchange(first, second):
    """Swaps two existing paths in one step; False where the system cannot.

    Linux's renameat2(RENAME_EXCHANGE) swaps two directory entries
    atomically, so a replaced folder never disappears, even for an instant,
    from a reader that polls it (TF Serving does). Other systems, old
    kernels and file systems without the flag get False, and the caller
    falls back to two renames.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    status = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    return status == 0


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
    handle, temporary = tempfile.mkstemp(
        prefix=f".{stem}.partial-", suffix=extension, dir=directory
    )
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
        # A writer may have replaced the temporary file by a folder.
        _remove(temporary)
    return path


def write_directory_atomically(path, write, check=None):
    """Produces the folder ``path`` by ``write(temporary_folder)``, then renames it.

    A plain rename cannot replace a non-empty folder. On Linux the new and
    the existing folder are swapped in one step (renameat2 with
    RENAME_EXCHANGE) and the old one is then deleted, so ``path`` never
    disappears. Elsewhere the existing ``path`` is first moved to a hidden
    backup, the new folder renamed into place, and the backup deleted; if
    the second rename fails the backup is moved back. Either way ``path``
    holds a complete artefact, old or new, whenever it exists.

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
        if os.path.lexists(path) and _exchange(temporary, path):
            # `temporary` now holds the previous artefact; `finally` deletes it.
            _fsync_path(parent)
            return path
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
        # After an exchange this is the previous artefact, which may be a file.
        _remove(temporary)
        if backup is not None:
            _remove(backup)
    return path
