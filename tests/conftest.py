from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
# Embedding caches of this session (label and vocabulary embeddings) stay out of the user's
# ~/.cache; subprocesses and the session's Ray workers inherit it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mig_ray-test-cache-")
# Ray's processes report metrics every second instead of every 10 (test_metrics waits for two quiet
# report intervals before it counts, and for the reports after): the session's Ray reads this at start.
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 endpoint on loopback (moto's server) for `s3://` paths, up for the whole session.
    Its address and credentials go into the environment before the session's Ray starts, as on a
    cluster whose nodes get them from theirs, so Ray's workers reach it too."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="mig-ray-test", AWS_SECRET_ACCESS_KEY="mig-ray-test",
                      AWS_REGION="us-east-1", AWS_ENDPOINT_URL=url, AWS_EC2_METADATA_DISABLED="true")
    yield url
    server.stop()


@pytest.fixture(scope="session")
def ray_address(s3_endpoint) -> str:
    """One local Ray cluster for the test session: loopback, no dashboard, enough logical CPUs."""
    import ray

    from mig_ray.runtime.session import ray_up

    assert ray_up(None, num_cpus=8)
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:"), address
    yield address
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random-weight Llama (BPE tokenizer, chat template) built once per test session."""
    from tiny_llama import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="session")
def static_config():
    """The static tagger with its defaults: distilled from the bundled MiniLM (PCA to 256), as users
    get it."""
    from mig_ray.annotate.static_tagger import StaticTaggerConfig

    return StaticTaggerConfig()


@pytest.fixture(scope="session")
def static_model(static_config):
    """The static model, distilled once per test session (about 20 s on 2 cores) into the session's
    user cache (XDG_CACHE_HOME above; Ray's workers inherit it)."""
    from mig_ray.annotate.static_tagger import ensure_static_model

    return ensure_static_model(static_config)


@pytest.fixture(scope="session")
def quick_tagger(static_config, static_model) -> dict:
    """A job file's `annotate.tagger` for tests where which tagger labels the records does not matter,
    only that a real one runs through Ray Data actors and the cache: the static tagger (distilled
    once per session), whose actor loads in a fraction of a second where MiniLM's takes seconds (the
    MiniLM tagger keeps its own job tests: the demo job, the pinned outputs, compare's cached
    vectors, multinode)."""
    return {"kind": "static", "options": {"pca_dims": static_config.pca_dims},
            "resources": {"concurrency": 1, "num_cpus": 0.5, "batch_size": 64}}
