"""Opening an image with the system's viewer (``/image`` in ``askdraw chat``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def open_with_viewer(path: str) -> bool:
    """Open ``path`` with the system image viewer; False when there is none (or no display)."""
    try:
        if sys.platform == "darwin":
            command = ["open", path]
        elif os.name == "nt":
            os.startfile(path)  # type: ignore[attr-defined]
            return True
        else:
            if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
                return False
            command = ["xdg-open", path]
        if shutil.which(command[0]) is None:
            return False
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        return True
    except OSError:
        return False


__all__ = ["open_with_viewer"]
