"""Weights subsystem: registry data, cache location, resumable download (against a loopback HTTP server),
fetch / import / verify / load through WeightStore. Tiny files only; no real networks are built."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from facerestore_cli.errors import UsageError, WeightsError
from facerestore_cli.weights import download as download_module
from facerestore_cli.weights import store as store_module
from facerestore_cli.weights.download import download, rich_progress
from facerestore_cli.weights.registry import WeightSpec, get_spec, load_registry
from facerestore_cli.weights.store import WeightStore, home, offline_from_environment

EXPECTED_IDS = {
    "difface-unet", "difface-swinir", "retinaface-resnet50", "retinaface-mobile0.25", "parsenet",
    "arcface-ir-se50", "dr2-unet", "dr2-sparnethd", "p2-ffhq", "diffbfr-irm1", "diffbfr-irm2", "diffbfr-tem",
    "ipc-swinir", "ipc-prior", "ipc-mask", "estimator-swinir", "realesrgan-x2plus", "realesrgan-x4plus",
    "lpips-alexnet", "lpips-vgg16", "lpips-alex-linear", "lpips-vgg-linear", "fid-inception",
}
KNOWN_ARCHS = {"unet", "swinir_difface", "retinaface", "parsenet", "arcface", "sparnethd", "rrdbnet", "tv_alexnet",
               "tv_vgg16", "lpips_linear", "fid_inception", "ipc_mask"}


# -- loopback HTTP server ------------------------------------------------------------------------------------

class FileServer:
    """State shared with the handler: the payload, the misbehaviour per request, and what was asked."""

    def __init__(self):
        self.payload = b""
        self.mode = "ok"  # ok | ignore_range | truncate | slow | error503 | missing
        self.scripted_modes: list[str] = []  # consumed first, one per request
        self.requests: list[dict] = []
        self.stop = threading.Event()
        self.base_url = ""

    def url(self, name: str = "file.bin") -> str:
        return f"{self.base_url}/{name}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        state: FileServer = self.server.state
        state.requests.append({"path": self.path, "range": self.headers.get("Range")})
        mode = state.scripted_modes.pop(0) if state.scripted_modes else state.mode
        try:
            self._serve(state, mode)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _serve(self, state: FileServer, mode: str):
        if mode == "slow":
            state.stop.wait(60)  # far beyond any bound below: a client without a timeout would wait it out
        if mode == "error503":
            self.send_error(503)
            return
        if mode == "missing" or self.path != "/file.bin":
            self.send_error(404)
            return
        body, start = state.payload, 0
        wanted = self.headers.get("Range")
        if wanted and mode != "ignore_range":
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk[: len(chunk) // 2] if mode == "truncate" else chunk)


@pytest.fixture
def server():
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = state
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download_module, "RETRY_BACKOFF_S", 0.0)


# -- tiny fake network ---------------------------------------------------------------------------------------

def tiny_state_dict(width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"lin.weight": torch.randn(width, 3, generator=g), "lin.bias": torch.randn(width, generator=g)}


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture
def tiny_arch(monkeypatch):
    """Make `expected_layout("tiny", {"width": w})` describe a Linear(3, w) without any real network."""
    from facerestore_cli.archs import layout

    def expected_layout(arch_name, config):
        assert arch_name == "tiny"
        return {"lin.weight": (config["width"], 3), "lin.bias": (config["width"],)}

    monkeypatch.setattr(layout, "expected_layout", expected_layout)


def tiny_spec(weight_id="tiny-net", urls=(), **fields) -> WeightSpec:
    defaults = dict(file=f"{weight_id}.pth", arch="tiny", license="MIT", source="tests", config={"width": 4},
                    obtain="ask the test author", format={"nested_key": None, "strip_prefix": "module."})
    defaults.update(fields)
    return WeightSpec(id=weight_id, urls=tuple(urls), **defaults)


def make_store(tmp_path, *specs, offline=False) -> WeightStore:
    return WeightStore(root=tmp_path / "home", offline=offline, registry={s.id: s for s in specs})


# -- registry ------------------------------------------------------------------------------------------------

def test_registry_entries_are_well_formed():
    registry = load_registry()
    assert set(registry) == EXPECTED_IDS
    files = [spec.file for spec in registry.values()]
    assert len(set(files)) == len(files)
    for weight_id, spec in registry.items():
        assert spec.id == weight_id
        assert spec.arch in KNOWN_ARCHS, weight_id
        assert isinstance(spec.config, dict) and spec.config, weight_id
        assert spec.license and spec.source, weight_id
        assert set(spec.format) == {"nested_key", "strip_prefix"}
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        for url in spec.urls:
            assert url.startswith("https://"), url
        if spec.urls:
            assert spec.file == Path(urlparse(spec.urls[0]).path).name, weight_id
        else:
            assert spec.obtain and "import" in spec.obtain, weight_id
    for weight_id in ("retinaface-resnet50", "retinaface-mobile0.25", "parsenet", "arcface-ir-se50"):
        assert registry[weight_id].urls[0].startswith("https://github.com/xinntao/facexlib/releases/download/")


def test_registry_pins_only_known_facts():
    registry = load_registry()
    arcface = registry["arcface-ir-se50"]
    assert arcface.sha256 is None
    assert arcface.sha256_reported == "a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28"
    assert registry["difface-swinir"].nested_key == "state_dict"
    assert registry["difface-unet"].config["num_res_blocks"] == [1, 2, 2, 2, 2, 3, 4]
    assert registry["retinaface-mobile0.25"].config == {"network": "mobile0.25"}
    assert registry["p2-ffhq"].config == registry["dr2-unet"].config
    assert "pan.baidu.com" in registry["dr2-unet"].obtain
    # the LPIPS linear layers' hashes are the lpips 0.1.4 package's own files (its official distribution)
    import lpips

    shipped = Path(lpips.__file__).parent / "weights" / "v0.1"
    for net in ("alex", "vgg"):
        spec = registry[f"lpips-{net}-linear"]
        assert spec.sha256 == hashlib.sha256((shipped / spec.file).read_bytes()).hexdigest()
        assert spec.size == (shipped / spec.file).stat().st_size


def test_load_registry_names_the_bad_entry(tmp_path):
    bad = tmp_path / "registry.yaml"
    bad.write_text("good-one:\n  file: a.pth\n  urls: []\n  obtain: x\n  license: MIT\n  source: s\n"
                   "  arch: unet\n  config: {a: 1}\n  format: {nested_key: null, strip_prefix: null}\n"
                   "broken-one:\n  file: b.pth\n  urls: []\n  license: MIT\n  source: s\n  config: {a: 1}\n"
                   "  format: {nested_key: null, strip_prefix: null}\n")
    with pytest.raises(WeightsError, match=r"'broken-one'.*missing field\(s\): arch"):
        load_registry(bad)


def test_get_spec_unknown_id_is_a_usage_error_listing_known_ids():
    with pytest.raises(UsageError) as info:  # exit 2, like an unknown method
        get_spec("no-such-weights")
    assert "no-such-weights" in info.value.message and "difface-unet" in info.value.message
    assert info.value.exit_code == 2


# -- cache location ------------------------------------------------------------------------------------------

def test_home_precedence_and_never_cwd(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert home() == tmp_path / "explicit"
    monkeypatch.delenv("FACERESTORE_HOME")
    assert home() == tmp_path / "xdg" / "facerestore"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert home() == tmp_path / "user" / ".cache" / "facerestore"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert home() == tmp_path / "user" / ".cache" / "facerestore"
    assert WeightStore().weights_dir == tmp_path / "user" / ".cache" / "facerestore" / "weights"
    assert Path.cwd() not in home().parents and home() != Path.cwd()


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_offline_env(monkeypatch, value, expected):
    monkeypatch.setenv("FACERESTORE_OFFLINE", value)
    assert offline_from_environment() is expected
    assert WeightStore(root=Path("/nonexistent")).offline is expected


# -- download ------------------------------------------------------------------------------------------------

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fresh_download_lands_atomically(server, tmp_path):
    server.payload = PAYLOAD
    dest = tmp_path / "w" / "file.bin"
    seen = []
    sha = download(server.url(), dest, len(PAYLOAD), PAYLOAD_SHA, progress=lambda d, t: seen.append((d, t)))
    assert sha == PAYLOAD_SHA and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "w" / "file.bin.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [r["range"] for r in server.requests] == [None]


def test_resume_uses_range_request(server, tmp_path):
    server.payload = PAYLOAD
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:100_000])
    assert download(server.url(), dest, expected_sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == ["bytes=100000-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.payload, server.mode = PAYLOAD, "ignore_range"
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes of another file")
    assert download(server.url(), dest, expected_sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] is not None


def test_complete_part_answered_416_is_finished(server, tmp_path):
    server.payload = PAYLOAD
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    assert download(server.url(), dest, expected_sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "file.bin.part").exists()


def test_dropped_connection_is_retried_and_resumed(server, tmp_path):
    server.payload, server.scripted_modes = PAYLOAD, ["truncate"]
    dest = tmp_path / "file.bin"
    assert download(server.url(), dest, expected_sha256=PAYLOAD_SHA, retries=2) == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_always_truncated_body_never_creates_dest(server, tmp_path):
    server.payload, server.mode = PAYLOAD, "truncate"
    dest = tmp_path / "file.bin"
    with pytest.raises(WeightsError, match="failed after 3 attempts") as info:
        download(server.url(), dest, expected_sha256=PAYLOAD_SHA, retries=2)
    assert not dest.exists()
    assert len(server.requests) == 3
    assert "resume" in info.value.hint


def test_slow_server_times_out(server, tmp_path):
    server.payload, server.mode = PAYLOAD, "slow"
    started = time.monotonic()
    with pytest.raises(WeightsError, match="failed after 2 attempts"):
        download(server.url(), tmp_path / "file.bin", timeout=0.2, retries=1)
    assert time.monotonic() - started < 20  # two 0.2 s timeouts, with room for load; without them: 120 s
    assert not (tmp_path / "file.bin").exists()


def test_sha256_mismatch_leaves_nothing(server, tmp_path):
    server.payload = PAYLOAD
    dest = tmp_path / "file.bin"
    with pytest.raises(WeightsError) as info:
        download(server.url(), dest, expected_sha256="0" * 64)
    assert f"expected {'0' * 64}, got {PAYLOAD_SHA}" in info.value.message
    assert not dest.exists() and not (tmp_path / "file.bin.part").exists()


def test_size_mismatch_is_refused_before_download(server, tmp_path):
    server.payload = PAYLOAD
    with pytest.raises(WeightsError, match=f"expected 123 bytes, server has {len(PAYLOAD)}"):
        download(server.url(), tmp_path / "file.bin", expected_size=123)
    assert list(tmp_path.iterdir()) == []


def test_http_503_is_retried(server, tmp_path):
    server.payload, server.scripted_modes = PAYLOAD, ["error503"]
    assert download(server.url(), tmp_path / "file.bin", expected_sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert len(server.requests) == 2


def test_http_404_is_not_retried(server, tmp_path):
    server.mode = "missing"
    with pytest.raises(WeightsError, match="HTTP 404"):
        download(server.url(), tmp_path / "file.bin", retries=3)
    assert len(server.requests) == 1


def test_rich_progress_without_tty_is_a_silent_callback(capsys):
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=False)
    with rich_progress("test", console=console) as update:
        assert update(5, 10) is None and update(10, None) is None
    assert console.file.getvalue() == ""
    assert capsys.readouterr() == ("", "")


# -- WeightStore ---------------------------------------------------------------------------------------------

def test_fetch_records_hash_and_loads(server, tmp_path, tiny_arch):
    state = tiny_state_dict()
    server.payload = torch_bytes({f"module.{k}": v for k, v in state.items()})
    spec = tiny_spec(urls=[server.url("missing.bin"), server.url()])  # first URL 404s: the mirror is used
    store = make_store(tmp_path, spec)
    assert store.status(spec.id) == "missing"
    path = store.fetch(spec.id)
    assert path == tmp_path / "home" / "weights" / "tiny-net.pth" and store.status(spec.id) == "present"
    sha = hashlib.sha256(server.payload).hexdigest()
    records = json.loads((tmp_path / "home" / "weights" / "hashes.json").read_text())
    assert records["tiny-net.pth"]["sha256"] == sha == store.recorded_sha256(spec.id)
    assert store.verify(spec.id).ok and store.verify(spec.id).sha256 == sha

    loaded = store.load_state_dict(spec.id, config_override={})
    assert set(loaded) == set(state) and torch.equal(loaded["lin.weight"], state["lin.weight"])

    def no_rehash(*_args, **_kwargs):
        raise AssertionError("an unchanged file must not be re-hashed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "sha256_file", no_rehash)
        store.load_state_dict(spec.id)
    with pytest.raises(WeightsError, match="does not fit tiny-net"):
        store.load_state_dict(spec.id, config_override={"width": 5})
    assert store.fetch(spec.id) == path and len(server.requests) == 2  # present: no new request


def test_partial_status(tmp_path):
    spec = tiny_spec(urls=["https://example.invalid/tiny-net.pth"])
    store = make_store(tmp_path, spec)
    store.weights_dir.mkdir(parents=True)
    (store.weights_dir / "tiny-net.pth.part").write_bytes(b"half")
    assert store.status(spec.id) == "partial"


@pytest.mark.parametrize("via_env", [False, True])
def test_offline_fetch_makes_no_request(server, tmp_path, monkeypatch, via_env):
    server.payload = PAYLOAD
    spec = tiny_spec(urls=[server.url()])
    if via_env:
        monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
        store = WeightStore(root=tmp_path / "home", registry={spec.id: spec})
    else:
        store = make_store(tmp_path, spec, offline=True)
    with pytest.raises(WeightsError) as info:
        store.fetch(spec.id)
    assert "offline" in info.value.message
    assert "facerestore weights import tiny-net" in info.value.hint
    assert server.requests == []


def test_entry_without_url_explains_import(tmp_path):
    store = WeightStore(root=tmp_path / "home", offline=False)
    with pytest.raises(WeightsError) as info:
        store.fetch("dr2-unet")
    text = f"{info.value.message} {info.value.hint}"
    assert "facerestore weights import dr2-unet" in text and "pan.baidu.com" in text


def test_require_lists_every_missing_file(tmp_path):
    store = WeightStore(root=tmp_path / "home", offline=False)
    with pytest.raises(WeightsError) as info:
        store.require(["difface-unet", "dr2-sparnethd", "difface-unet"])
    message, hint = info.value.message, info.value.hint
    assert "2 weight files missing" in message
    assert "iddpm_ffhq512_ema500000.pth" in message and "SPARNetHD_FFHQ_DR2aug.pth" in message
    assert "https://github.com/zsyOAOA/DifFace/releases/download/V1.0/iddpm_ffhq512_ema500000.pth" in message
    assert "pan.baidu.com" in message
    assert "facerestore weights fetch difface-unet" in hint
    assert "facerestore weights import dr2-sparnethd" in hint


def test_truncated_file_is_never_loaded(tmp_path, tiny_arch):
    spec = tiny_spec()
    store = make_store(tmp_path, spec)
    store.weights_dir.mkdir(parents=True)
    data = torch_bytes(tiny_state_dict())
    store.path(spec.id).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        store.load_state_dict(spec.id)
    assert store.recorded_sha256(spec.id) is None


def test_changed_file_fails_recorded_hash(tmp_path, tiny_arch):
    spec = tiny_spec()
    store = make_store(tmp_path, spec)
    src = tmp_path / "good.pth"
    src.write_bytes(torch_bytes(tiny_state_dict(seed=0)))
    path = store.import_file(spec.id, src)
    recorded = store.recorded_sha256(spec.id)
    before = path.stat()
    path.write_bytes(torch_bytes(tiny_state_dict(seed=1)))  # same size, other bytes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(WeightsError) as info:
        store.load_state_dict(spec.id)
    assert f"expected sha256 {recorded}" in info.value.message
    assert "facerestore weights import tiny-net" in info.value.message
    assert not store.verify(spec.id).ok


def test_import_rejects_wrong_layout_with_summary(tmp_path, tiny_arch):
    spec = tiny_spec()
    store = make_store(tmp_path, spec)
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(torch_bytes({"lin.weight": torch.zeros(5, 3), "extra.weight": torch.zeros(1)}))
    with pytest.raises(WeightsError) as info:
        store.import_file(spec.id, wrong)
    message = info.value.message
    assert "1 missing key (e.g. lin.bias)" in message
    assert "extra.weight" in message and "lin.weight expected (4,3) got (5,3)" in message
    assert not store.path(spec.id).exists()

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(WeightsError, match="garbage.pth is corrupt"):
        store.import_file(spec.id, garbage)


def test_import_accepts_matching_file_byte_identical(tmp_path, tiny_arch):
    spec = tiny_spec(format={"nested_key": "state_dict", "strip_prefix": "module."})
    store = make_store(tmp_path, spec)
    src = tmp_path / "download" / "tiny.pth"
    src.parent.mkdir()
    src.write_bytes(torch_bytes({"state_dict": {f"module.{k}": v for k, v in tiny_state_dict().items()}}))
    store.weights_dir.mkdir(parents=True)
    (store.weights_dir / "tiny-net.pth.part").write_bytes(b"stale")
    dest = store.import_file(spec.id, src)
    assert dest.read_bytes() == src.read_bytes()
    assert store.recorded_sha256(spec.id) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert store.status(spec.id) == "present" and not (store.weights_dir / "tiny-net.pth.part").exists()
    result = store.verify(spec.id)
    assert result.ok and "recorded" in result.reason
    assert set(store.load_state_dict(spec.id)) == {"lin.weight", "lin.bias"}


def test_verify_without_any_hash_is_unverified_not_bad(tmp_path, tiny_arch):
    spec = tiny_spec()
    store = make_store(tmp_path, spec)
    store.weights_dir.mkdir(parents=True)
    store.path(spec.id).write_bytes(torch_bytes({"state_dict": {f"module.{k}": v for k, v in tiny_state_dict().items()}}))
    result = store.verify(spec.id)
    assert result.ok and result.reason.startswith("unverified")
    assert store.recorded_sha256(spec.id) == hashlib.sha256(store.path(spec.id).read_bytes()).hexdigest()
    assert not store.verify("tiny-net").reason.startswith("missing")


def test_verify_finds_a_file_that_does_not_fit_its_network_unless_its_config_is_recorded(tmp_path, tiny_arch):
    """A file of another configuration is BAD until the configuration it was made with is recorded beside it (as
    `train export` does); then every loader builds that network."""
    spec = tiny_spec()
    store = make_store(tmp_path, spec)
    store.weights_dir.mkdir(parents=True)
    wider = {"lin.weight": torch.zeros(8, 3), "lin.bias": torch.zeros(8)}
    store.path(spec.id).write_bytes(torch_bytes({"state_dict": {f"module.{k}": v for k, v in wider.items()}}))
    result = store.verify(spec.id)
    assert not result.ok and "does not fit its network (tiny)" in result.reason and "lin.weight" in result.reason
    store.record_config(spec.id, {"width": 8})
    assert store.verify(spec.id).ok and store.layout_problem(spec.id) is None
    assert store.config(spec.id) == {"width": 8} and set(store.load_state_dict(spec.id, {})) == set(wider)
    store.record_config(spec.id, {"width": 4})  # the registry's own: nothing to record
    assert not store.config_path(spec.id).exists()
