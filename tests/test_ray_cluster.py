"""--engine ray on a multi-node Ray cluster (ray.cluster_utils.Cluster: several raylets on this machine) whose faults a
single process never meets (#19): a worker node killed in the middle of the run and a Ray Data block that errors
(the `max_errored_blocks` path). The run ends with every photo either written whole or marked to redo; the rerun
completes, and the outputs equal a plain local run's byte for byte."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from archival_helpers import PLUGIN_PREAMBLE, invoke, report_lines
from conftest import ALIGNED_LQ, require_shared

# A method that inverts faces slowly (so the run is still going when its node dies), says on which node it restores,
# and makes the first batch it gets fail once with an error the engine does not catch: that block errors.
SLOW_MODULE = PLUGIN_PREAMBLE + '''
class Slow:
    def restore(self, faces, generators, callback=None):
        import ray

        from facerestore_cli.methods.base import Restoration

        marker = os.environ["RESTORING_NODE"]
        if ray.is_initialized() and not os.path.exists(marker):  # in a Ray worker (a plain run has no node)
            with open(marker + ".part", "w") as handle:
                handle.write(ray.get_runtime_context().get_node_id())
            os.replace(marker + ".part", marker)
        flag = os.environ["POISON_FLAG"]
        try:
            os.rename(flag, flag + ".taken")
        except FileNotFoundError:
            time.sleep(0.4)
            return Restoration(1.0 - faces)
        raise ZeroDivisionError("a poisoned batch")


def build(preset, params, networks):
    return Slow()
'''
PHOTOS = 10


def images(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    require_shared()
    (tmp_path / "slow.py").write_text(SLOW_MODULE)
    (tmp_path / "slow.yaml").write_text("name: slow\nmethod: slow\nface_size: 64\ncomponents: {}\nparameters:\n"
                                        "  seed: 1\n")
    src = tmp_path / "in"
    src.mkdir()
    crops = sorted(ALIGNED_LQ.glob("*.png"))
    for i in range(PHOTOS):
        Image.open(crops[i % len(crops)]).resize((64, 64)).save(src / f"face{i:02}.png")
    for name, value in {"FACERESTORE_HOME": tmp_path / "home", "RESTORING_NODE": tmp_path / "node",
                        "POISON_FLAG": tmp_path / "poison", "RAY_DEDUP_LOGS": "0"}.items():
        monkeypatch.setenv(name, str(value))
    return tmp_path, ("run", src, "-o", tmp_path / "out", "--preset", tmp_path / "slow.yaml", "--aligned",
                      "--batch-size", "1", "-q")


def kill_restoring_node(cluster, out, marker, killed: list, finished: threading.Event) -> None:
    """Once the restoring actor has said where it runs and two photos are written, remove that node (its raylet,
    actors and objects die with it)."""
    while not finished.is_set():
        if marker.exists() and len(list(out.glob("*.png"))) >= 2:
            node_id = marker.read_text()
            for node in cluster.list_all_nodes():
                if node.node_id == node_id and not node.head:
                    cluster.remove_node(node, allow_graceful=False)
                    killed.append(node_id)
            return
        time.sleep(0.05)


def test_a_worker_node_dies_mid_run_and_a_block_errors(setup):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'facerestore[ray]')")
    from ray.cluster_utils import Cluster

    tmp_path, args = setup
    code, _o, err = invoke(*args[:3], tmp_path / "plain", *args[4:])  # the plain local run to compare with
    assert code == 0, err
    plain = images(tmp_path / "plain")
    assert len(plain) == PHOTOS

    (tmp_path / "poison").touch()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node: never killed
    for _ in range(2):
        cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    killed: list[str] = []
    finished = threading.Event()
    try:
        killer = threading.Thread(target=kill_restoring_node,
                                  args=(cluster, tmp_path / "out", tmp_path / "node", killed, finished))
        killer.start()
        code, _o, err = invoke(*args, "--engine", "ray", "--ray-address", cluster.address, "--report",
                               tmp_path / "first.jsonl")
        finished.set()
        killer.join()
        assert killed, f"the restoring node was not killed mid-run (exit {code}): {err[-2000:]}"
        first = report_lines(tmp_path / "first.jsonl")
        records, summary = first[:-1], first[-1]["summary"]
        failed = [r for r in records if r["status"] == "failed"]
        assert len(records) == PHOTOS and code == (1 if failed else 0), err
        assert (tmp_path / "poison.taken").exists() and failed, "the poisoned block must be recorded, not dropped"
        assert all(r["reason"].startswith("lost with its Ray Data block") or "ZeroDivisionError" in r["reason"]
                   for r in failed), failed
        written = images(tmp_path / "out")
        assert all(written[name] == plain[name] for name in written)  # nothing written is half-written or wrong
        assert summary["restored"] == len(written) == PHOTOS - len(failed)

        code, _o, err = invoke(*args, "--engine", "ray", "--ray-address", cluster.address, "--report",
                               tmp_path / "second.jsonl")
        assert code == 0, err
        second = report_lines(tmp_path / "second.jsonl")
        assert sorted(r["input"] for r in second[:-1] if r["status"] == "restored") == sorted(r["input"] for r in failed)
        assert images(tmp_path / "out") == plain
        assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    finally:
        ray.shutdown()
        cluster.shutdown()
