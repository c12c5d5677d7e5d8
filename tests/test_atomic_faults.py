"""Every writer is atomic under injected faults: a flush/write that fails (file size limit), an fsync or a rename
that raises, a process killed between writing and renaming. The destination is then the old complete file, never
a partial one, and what a failed writer leaves behind is only a recognisable temp file (a kill) or nothing (an
error). Without faults, each writer fsyncs its data before the rename and the folder after it."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import resource
import signal
import stat
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from conftest import RETINA_MOBILE, require_shared
from facerestore_cli.files import STALE_TEMP

OLD = b"the old, complete file\n"
TEMP_NAMES = (STALE_TEMP, re.compile(r"^.+\.part$"))  # a killed writer may leave these, nothing else


# -- writers: each returns (destination, write, is_new) for a folder ---------------------------------------------

def _picture(tmp: Path):
    from PIL import Image

    from facerestore_cli.imageio import read_image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp / "src.png")
    return read_image(tmp / "src.png")


def _decodes(dest: Path) -> bool:
    from facerestore_cli.imageio import read_image

    return read_image(dest).rgb.shape[:2] in ((48, 64), (64, 64))


def w_atomic_write_bytes(tmp: Path):
    from facerestore_cli.files import atomic_write_bytes

    dest, new = tmp / "out" / "a.bin", os.urandom(4096)
    return dest, lambda: atomic_write_bytes(dest, new), lambda: dest.read_bytes() == new


def w_copy_through(tmp: Path):
    from facerestore_cli.files import atomic_copy

    src, dest = tmp / "photo.jpg", tmp / "out" / "photo.jpg"
    src.write_bytes(os.urandom(8192))
    return dest, lambda: atomic_copy(src, dest), lambda: dest.read_bytes() == src.read_bytes()


def w_write_image(fmt: str, tmp: Path):
    from facerestore_cli.imageio import write_image

    picture = _picture(tmp)
    dest = tmp / "out" / f"a.{fmt}"
    return dest, lambda: write_image(picture, dest, fmt=fmt), lambda: _decodes(dest)


def w_face_crop(tmp: Path):
    from facerestore_cli.sheets import save_face_crop

    dest = tmp / "out" / "_faces" / "a_face00.png"
    crop = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    return dest, lambda: save_face_crop(crop, dest), lambda: _decodes(dest)


def w_compare_sheet(tmp: Path):
    from facerestore_cli.sheets import save_compare_sheet

    rgb = _picture(tmp).rgb
    dest = tmp / "out" / "_compare" / "a.jpg"
    faces = [{"index": 0, "box": [4, 4, 30, 30], "landmarks": [[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]]}]
    return dest, lambda: save_compare_sheet(rgb, rgb, faces, [], dest), lambda: dest.read_bytes()[:2] == b"\xff\xd8"


def w_report(tmp: Path):
    from facerestore_cli.report import ReportWriter

    dest = tmp / "out" / "report.jsonl"

    def write():
        writer = ReportWriter(dest)
        for i in range(50):
            writer.write({"input": f"{i}.jpg", "status": "restored"})
        writer.close()

    return dest, write, lambda: len(dest.read_text().splitlines()) == 50


def w_state(tmp: Path):
    from facerestore_cli.state import STATE_NAME, RunState

    out = tmp / "out"
    (tmp / "a.jpg").write_bytes(b"x" * 100)
    state = RunState(out)

    def write():
        for i in range(20):
            state.record(f"{i}.jpg", tmp / "a.jpg", out / f"{i}.jpg", "done", None, "sig")
        state.flush()

    return out / STATE_NAME, write, lambda: len(json.loads((out / STATE_NAME).read_text())["entries"]) == 20


def w_weight_hashes(tmp: Path):
    from facerestore_cli.weights.store import HASHES_FILE, WeightStore

    store = WeightStore(tmp / "home")
    weight = store.weights_dir / "some.pth"
    weight.parent.mkdir(parents=True, exist_ok=True)
    weight.write_bytes(b"w" * 1000)
    dest = store.weights_dir / HASHES_FILE
    return dest, lambda: store._record(weight, "ab" * 32), lambda: "some.pth" in json.loads(dest.read_text())


def w_weight_import(tmp: Path):
    from facerestore_cli.weights.store import WeightStore

    require_shared()
    store = WeightStore(tmp / "home")
    dest = store.path("retinaface-mobile0.25")
    return (dest, lambda: store.import_file("retinaface-mobile0.25", RETINA_MOBILE),
            lambda: dest.read_bytes() == RETINA_MOBILE.read_bytes())


def w_weight_download(served: "Served", tmp: Path):
    from facerestore_cli.weights.download import download

    payload = os.urandom(200_000)
    (served.folder / "file.bin").write_bytes(payload)
    dest = tmp / "home" / "weights" / "file.bin"
    url = f"{served.url}/file.bin"
    return dest, lambda: download(url, dest, retries=0), lambda: dest.read_bytes() == payload


WRITERS = {
    "atomic_write_bytes": w_atomic_write_bytes,
    "copy-through": w_copy_through,
    **{f"write_image-{fmt}": functools.partial(w_write_image, fmt) for fmt in ("png", "jpg", "webp", "tiff")},
    "face crop": w_face_crop,
    "compare sheet": w_compare_sheet,
    "report": w_report,
    "run state": w_state,
    "weights hashes.json": w_weight_hashes,
    "weights import": w_weight_import,
    "weights download": None,  # needs the server fixture
}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Served(NamedTuple):
    folder: Path  # what the loopback server serves
    url: str


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield Served(folder, f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.shutdown()
    httpd.server_close()


def make_writer(name: str, tmp: Path, served) -> tuple[Path, object, object]:
    """The writer's destination (holding OLD), its write and its check; the folder's other files are remembered."""
    dest, write, is_new = w_weight_download(served, tmp) if name == "weights download" else WRITERS[name](tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(OLD)
    _BEFORE[dest] = {p.name for p in dest.parent.iterdir()}
    return dest, write, is_new


_BEFORE: dict[Path, set[str]] = {}


def leftovers(folder: Path, dest: Path) -> list[str]:
    """Files the write left in the destination's folder besides the destination."""
    return sorted(p.name for p in folder.iterdir() if p.name not in _BEFORE[dest])


def in_child(body) -> int:
    """Run body() in a forked child; its exit status (0 when body returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            body()
            code = 0
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- the tests ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_without_faults_writes_the_new_file(name, tmp_path, served):
    dest, write, is_new = make_writer(name, tmp_path, served)
    write()
    assert is_new()


def _raising(error_no: int):
    def fail(*_args, **_kwargs):
        raise OSError(error_no, os.strerror(error_no))
    return fail


def _fsync_of_files_fails(real_fsync):
    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)
    return fsync


@pytest.mark.parametrize("fault", ["fsync", "rename"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_failing_fsync_or_rename_keeps_the_old_file_and_leaves_nothing(name, fault, tmp_path, served, monkeypatch):
    dest, write, _is_new = make_writer(name, tmp_path, served)
    if fault == "fsync":
        monkeypatch.setattr(os, "fsync", _fsync_of_files_fails(os.fsync))
    else:
        monkeypatch.setattr(os, "replace", _raising(errno.EIO))
        monkeypatch.setattr(os, "rename", _raising(errno.EIO))
    with pytest.raises(Exception):  # noqa: B017 - each writer reports the failure in its own terms
        write()
    monkeypatch.undo()
    assert dest.read_bytes() == OLD
    left = leftovers(dest.parent, dest)
    allowed = [n for n in left if name == "weights download" and n == dest.name + ".part"]  # kept for resuming
    assert left == allowed, left


@pytest.mark.parametrize("name", list(WRITERS))
def test_failing_write_keeps_the_old_file_and_leaves_nothing(name, tmp_path, served):
    """A file size limit makes every write past 16 bytes fail (EFBIG): the disk-full case, at write or flush time."""
    dest, write, _is_new = make_writer(name, tmp_path, served)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        write()

    assert in_child(limited) == 1  # the writer raised
    assert dest.read_bytes() == OLD
    left = leftovers(dest.parent, dest)
    assert left == [n for n in left if name == "weights download" and n == dest.name + ".part"], left


@pytest.mark.parametrize("name", list(WRITERS))
def test_kill_between_write_and_rename_keeps_the_old_file(name, tmp_path, served):
    dest, write, _is_new = make_writer(name, tmp_path, served)

    def killed_at_rename():
        os.replace = os.rename = lambda *_a, **_k: os.kill(os.getpid(), signal.SIGKILL)
        write()

    assert in_child(killed_at_rename) == -signal.SIGKILL
    assert dest.read_bytes() == OLD
    for left in leftovers(dest.parent, dest):
        assert any(p.match(left) for p in TEMP_NAMES), f"{left} is not a recognisable temp file"


@pytest.mark.parametrize("name", list(WRITERS))
def test_data_is_fsynced_before_the_rename_and_the_folder_after(name, tmp_path, served, monkeypatch):
    dest, write, is_new = make_writer(name, tmp_path, served)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("rename", f"{os.path.abspath(src)} -> {os.path.abspath(dst)}"))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", lambda s, d: (events.append(("rename", f"{os.path.abspath(s)} -> "
                                                                              f"{os.path.abspath(d)}")), real_rename(s, d))[1])
    write()
    monkeypatch.undo()
    assert is_new()
    renames = [i for i, (kind, what) in enumerate(events) if kind == "rename" and what.endswith(f"-> {dest}")]
    assert len(renames) == 1, events
    at = renames[0]
    temp = events[at][1].split(" -> ")[0]
    assert ("fsync", temp) in events[:at], f"{temp} renamed onto {dest.name} before it was fsynced: {events}"
    assert ("fsync", str(dest.parent)) in events[at + 1:], f"folder not fsynced after the rename: {events}"


# -- the pipeline writes every output through the atomic writer ----------------------------------------------------

@pytest.mark.parametrize("kind", ["copy-through", "restored", "face crop", "compare sheet"])
def test_a_failed_rename_onto_an_output_keeps_the_old_output_and_fails_the_photo(kind, tiny_env, tmp_path,
                                                                                   monkeypatch):
    """A rerun (--force) over an earlier output whose rename fails: the earlier output stays whole, the photo is
    reported failed with the reason, and nothing else is left in the folder."""
    from PIL import Image

    from archival_helpers import make_one_face_photos, report_lines, tiny_run

    src, out = tmp_path / "in", tmp_path / "out"
    if kind == "copy-through":
        src.mkdir()
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(src / "a.png")
    else:
        make_one_face_photos(src, ["a.png"])
    extras = {"face crop": ("--save-faces",), "compare sheet": ("--save-compare",)}.get(kind, ())
    target = {"face crop": out / "_faces" / "a_face00.png", "compare sheet": out / "_compare" / "a.jpg"}.get(
        kind, out / "a.png")
    target.parent.mkdir(parents=True)
    target.write_bytes(OLD)
    real_replace = os.replace

    def replace(src_path, dst, *args, **kwargs):
        if Path(dst) == target:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src_path, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--force", "--report", tmp_path / "r.jsonl", *extras)
    monkeypatch.undo()
    assert code == 1, err
    record = report_lines(tmp_path / "r.jsonl")[0]
    assert record["status"] == "failed" and "Input/output error" in record["reason"], record
    assert target.read_bytes() == OLD
    assert not [p for p in target.parent.iterdir() if STALE_TEMP.match(p.name)]
