"""An artifact directory as one ``bytes`` object, for shipping it where the directory's disk is not
(a Ray worker on another node: :mod:`jitort.ray`).

``pack`` writes the directory's regular files into an uncompressed zip (artifacts are mostly
compiled objects and weights, which compress poorly, and stored members cannot be zip bombs: what
unpacks is at most what was shipped). ``unpack`` treats the archive as untrusted input and writes
each member itself instead of calling ``extractall``: a member name must be a relative path of
plain components (no ``..``, no absolute path, no backslash, no NUL), members must be regular files
or directories (a symlink or device entry refuses the whole archive), names must not repeat, and
every file is created new (``O_EXCL | O_NOFOLLOW``, mode 0600) inside a destination that is empty
or new. Loading an artifact still runs its code, as loading any jitort cache does: ship only
artifacts you built.
"""
from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from jitort import artifact
from jitort.errors import Fail


def pack(directory: str | os.PathLike[str]) -> bytes:
    """The artifact ``directory`` (every regular file under it) as zip bytes; ValueError when it is
    not an artifact directory or holds a symlink or special file."""
    root = Path(directory)
    if not (root / artifact.MANIFEST).is_file() or root.is_symlink():
        raise ValueError(f"{root} is not a jitort artifact directory (no {artifact.MANIFEST})")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                path = Path(dirpath) / name
                mode = path.lstat().st_mode
                if not stat.S_ISREG(mode):
                    what = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                    raise ValueError(f"cannot pack artifact {root}: {path.relative_to(root)} is {what}")
                z.write(path, path.relative_to(root).as_posix())
    return buf.getvalue()


def unpack(data: bytes, dest: str | os.PathLike[str]) -> Path:
    """Write the archive ``pack`` made into ``dest`` (created private, or an existing empty
    directory) and return it. Fail, naming the member, when the archive is not one ``pack`` could
    have written (see the module docstring); what was written before the refusal stays in ``dest``."""
    out = Path(dest)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if out.is_symlink() or any(out.iterdir()):
        raise ValueError(f"cannot unpack an artifact into {out}: not an empty directory")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise Fail(f"not a packed jitort artifact ({e})") from None
    with z:
        infos = z.infolist()
        seen: set[str] = set()
        for info in infos:  # check every member before writing any
            parts = _member_parts(info)
            key = "/".join(parts)
            if key in seen:
                raise Fail(f"packed artifact refused: member {info.filename!r} appears twice")
            seen.add(key)
        if artifact.MANIFEST not in seen:
            raise Fail(f"packed artifact refused: it has no {artifact.MANIFEST}")
        for info in infos:
            target = out.joinpath(*_member_parts(info))
            if info.is_dir():
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                with os.fdopen(fd, "wb") as f, z.open(info) as src:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
            except zipfile.BadZipFile as e:
                raise Fail(f"packed artifact refused: member {info.filename!r} is damaged ({e})") from None
    return out


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The member's path components; Fail unless it is a stored regular file or directory with a
    plain relative name."""
    name = info.filename
    why = None
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no file type recorded (a plain file)
    if info.compress_type != zipfile.ZIP_STORED:
        why = "is compressed (pack stores members)"
    elif "\\" in name or "\0" in name or name.startswith("/"):
        why = "is not a relative POSIX path"
    elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        why = "is a symlink" if kind == stat.S_IFLNK else "is not a regular file or directory"
    parts = PurePosixPath(name).parts
    if why is None and (not parts or any(p in ("", ".", "..") for p in name.rstrip("/").split("/"))):
        why = "has an empty, '.' or '..' path component"
    if why is not None:
        raise Fail(f"packed artifact refused: member {name!r} {why}")
    return parts
