"""An output's temporary files: beside the target, on its filesystem, so that a rename puts it in place at once."""

import os
import uuid


def temporary_path_next_to(path: str, kind: str) -> str:
    """A fresh hidden name in the directory of `path`: `.NAME.KIND-<random>`."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{kind}-{uuid.uuid4().hex}")


def replace_file(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it to `path`: a reader sees the old
    file or the new one, and nothing but a file at exactly `path` is ever replaced."""
    temporary = temporary_path_next_to(path, "tmp")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
