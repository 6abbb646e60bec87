"""The one image-path check of every adapter: a path stays inside its image root, and exists there.

A record's image path is refused where it is read (naming the input file and line or item), not later
when a written samples file is validated: an absolute path or one that climbs out with ``..`` is refused
always; with an image root, a symlink that resolves outside the root and a missing file are refused too.
"""

from __future__ import annotations

from pathlib import Path

from brainvlm.data.adapters import AdapterError
from brainvlm.data.image_paths import leaves_lexically, leaves_root


def check_image_path(image: str, image_root: str | Path | None, where: str, must_exist: bool = True) -> None:
    """Refuse ``image`` when it leaves ``image_root`` (or, with a root, is not a file under it).

    Args:
        image: the record's image path, relative to the image root.
        image_root: the folder image paths are relative to; None checks the path's text only.
        where: names the record in the message (``file:line`` or ``file item [i]``).
        must_exist: with a root, also refuse a path with no file behind it.

    Raises:
        AdapterError: naming ``where``, the path and the root.
    """
    if leaves_lexically(image):
        raise AdapterError(f"{where}: image {image!r} lies outside the image root"
                           f"{f' {image_root}' if image_root is not None else ''}; give a path relative to the root")
    if image_root is None:
        return
    if leaves_root(image_root, image):
        resolved = (Path(image_root) / image).resolve()
        raise AdapterError(f"{where}: image {image!r} is a symlink that resolves to {resolved}, outside the image "
                           f"root {image_root}; copy the image under the root")
    if must_exist and not (Path(image_root) / image).is_file():
        raise AdapterError(f"{where}: image {image!r} is not under the image root {image_root}; "
                           "check the root or the record's image")
