"""``jitort.archive``: an artifact directory packed into bytes and unpacked safely (what
``jitort.ray`` ships to its workers through Ray's object store)."""
from __future__ import annotations

import io
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest

from jitort import archive
from jitort.errors import Fail


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for info, data in members:
            z.writestr(info, data)
    return buf.getvalue()


def _fake_artifact(root: Path) -> Path:
    (root / "kernels" / "ab").mkdir(parents=True)
    (root / "kernels" / "ab" / "k.py").write_text("x = 1\n")
    (root / "consts").mkdir()
    (root / "consts" / "c0.npy").write_bytes(bytes(range(256)))
    (root / "manifest.json").write_text("{}")
    return root


def test_pack_and_unpack_round_trip(tmp_path) -> None:
    src = _fake_artifact(tmp_path / "src")
    out = archive.unpack(archive.pack(src), tmp_path / "out")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["consts/c0.npy", "kernels/ab/k.py", "manifest.json"]
    assert all((out / f).read_bytes() == (src / f).read_bytes() for f in files)
    assert all((out / f).stat().st_mode & 0o077 == 0 for f in files)
    with pytest.raises(ValueError, match="not an empty directory"):
        archive.unpack(archive.pack(src), out)
    os.symlink("/etc/passwd", src / "consts" / "c1.npy")
    with pytest.raises(ValueError, match=r"consts/c1.npy is a symlink"):
        archive.pack(src)
    with pytest.raises(ValueError, match="not a jitort artifact"):
        archive.pack(tmp_path)


def _symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16)
    return info


@pytest.mark.parametrize("members,why", [
    ([("../evil.py", b"x"), ("manifest.json", b"{}")], "'..' path component"),
    ([("kernels/../../evil.py", b"x"), ("manifest.json", b"{}")], "'..' path component"),
    ([("/tmp/evil.py", b"x"), ("manifest.json", b"{}")], "not a relative POSIX path"),
    ([("kernels\\..\\evil.py", b"x"), ("manifest.json", b"{}")], "not a relative POSIX path"),
    ([(_symlink_member("consts/c0.npy"), b"/etc/passwd"), ("manifest.json", b"{}")], "is a symlink"),
    ([("manifest.json", b"{}"), ("manifest.json", b"{}")], "appears twice"),
    ([("kernels/k.py", b"x")], "no manifest.json"),
], ids=["dotdot", "nested-dotdot", "absolute", "backslash", "symlink", "duplicate", "no-manifest"])
def test_unpack_refuses_unsafe_archives(tmp_path, members, why) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        data = _zip(members)
    with pytest.raises(Fail, match=why):
        archive.unpack(data, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "evil.py").exists()


def test_unpack_refuses_what_pack_does_not_write(tmp_path) -> None:
    with pytest.raises(Fail, match="is compressed"):
        archive.unpack(_zip([("manifest.json", b"{}" * 1000)], zipfile.ZIP_DEFLATED), tmp_path / "a")
    with pytest.raises(Fail, match="not a packed jitort artifact"):
        archive.unpack(b"not a zip", tmp_path / "b")
    good = bytearray(archive.pack(_fake_artifact(tmp_path / "src")))
    at = good.index(bytes(range(256)))
    good[at] ^= 0xFF  # a damaged member: its CRC no longer matches
    with pytest.raises(Fail, match="consts/c0.npy' is damaged"):
        archive.unpack(bytes(good), tmp_path / "c")
    shutil.rmtree(tmp_path / "c")
