"""`ray job submit` for real: a local Ray head (loopback, free ports, its own temp dir), a job sent
through the Ray Jobs API with the repository as its working_dir, its output checked, the head stopped.

Only the head this test starts is stopped (its process group, then any straggler whose command line
names its temp dir); the session cluster of tests/conftest.py and anyone else's Ray are untouched.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
N = 30  # selection.n of jobs/demo.yaml


def free_port() -> int:
    """A port free on loopback right now (for the one server Ray cannot be asked to pick a port for)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DASHBOARD_LINE = re.compile(rb"RAY_API_SERVER_ADDRESS='(http://127\.0\.0\.1:\d+)'")


def _read_back(log: Path, temp: Path) -> tuple[str | None, str | None]:
    """The dashboard URL and GCS address the head chose, once it has said them."""
    m = DASHBOARD_LINE.search(log.read_bytes())
    gcs = sorted(temp.glob("session_latest/gcs_server_port_*"))
    port = gcs[0].read_text().strip() if gcs else ""
    return (m.group(1).decode() if m else None), (f"127.0.0.1:{port}" if port.isdigit() else None)


def _ours(temp: Path) -> list[psutil.Process]:
    """Processes of the head this test started: their command line or working directory names its
    temp dir (a job's entrypoint runs in a working_dir unpacked there)."""
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(temp) in (p.info["cwd"] or "") or any(str(temp) in a for a in p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _stop_head(head: subprocess.Popen, temp: Path) -> None:
    """Stop the head: its process group (`ray start --block` and what it started), then stragglers.
    `ray stop` is not used: it stops every Ray on the machine."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        with suppress(ProcessLookupError):
            os.killpg(head.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            head.wait(timeout=wait)
    procs = _ours(temp)
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()


@pytest.fixture
def ray_head() -> Iterator[dict]:
    """A Ray head bound to 127.0.0.1 with the dashboard (the Jobs API needs it) on ports Ray picks."""
    from ray.job_submission import JobSubmissionClient

    # a short temp dir: Ray puts unix sockets under it and their paths are limited to ~107 bytes
    temp = Path(tempfile.mkdtemp(prefix="mrh", dir="/tmp"))
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env |= {
        # jobs run `mig-ray` from this venv, as a cluster image has it on PATH
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
        # single-machine mode: every Ray server binds to 127.0.0.1 (else GCS and raylet listen on *)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # the head's own token (Ray 2.60 token auth), not whatever ~/.ray/auth_token holds
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
    }
    # Port 0: Ray binds each server to a port of its own choosing and the test reads the dashboard's
    # and the GCS's back, so no port is picked, freed and then raced for. Ray requires a fixed port
    # for its client server (1024..65535, no 0); this test does not use that server.
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--port=0", "--dashboard-host=127.0.0.1", "--dashboard-port=0",
           "--include-dashboard=true", f"--ray-client-server-port={free_port()}",
           "--dashboard-agent-listen-port=0", "--dashboard-agent-grpc-port=0", "--metrics-export-port=0",
           "--runtime-env-agent-port=0", "--node-manager-port=0", "--object-manager-port=0",
           "--num-cpus=4", "--disable-usage-stats", f"--temp-dir={temp}"]
    log = open(temp.parent / f"{temp.name}.log", "wb")  # noqa: SIM115 - closed in the finally below
    head = subprocess.Popen(cmd, env=env, cwd=temp, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, client_obj, last, address, gcs = time.monotonic() + 120, None, None, None, None
        while time.monotonic() < deadline and head.poll() is None:
            if address is None or gcs is None:
                address, gcs = _read_back(Path(log.name), temp)
                if address is None or gcs is None:
                    time.sleep(0.5)
                    continue
            try:
                client_obj = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
                client_obj.list_jobs()
                break
            except Exception as e:  # the dashboard and its job agent take a few seconds
                client_obj, last = None, e
                time.sleep(0.5)
        if client_obj is None:
            pytest.fail(f"Ray head did not come up (exit {head.poll()}, last error {last!r}):\n"
                        + Path(log.name).read_text(errors="replace")[-3000:])
        yield {"client": client_obj, "address": address, "gcs": gcs, "temp": temp,
               "head": head}
    finally:
        _stop_head(head, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)


def _listening(temp: Path) -> set[str]:
    """The addresses the head's processes listen on (TCP)."""
    out = set()
    for p in _ours(temp):
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        out |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_job_submitted_to_a_local_head_runs_mig_ray(tmp_path, ray_head):
    from ray.job_submission import JobStatus

    t0 = time.monotonic()
    client = ray_head["client"]
    out = tmp_path / "out"
    # what `ray job submit --working-dir . -- mig-ray run jobs/demo.yaml` sends; the output goes
    # outside the working dir, which is a temporary copy on the head
    entrypoint = f"mig-ray run jobs/demo.yaml -o {out} --no-progress"
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(ROOT)})
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    deadline = time.monotonic() + 600  # the demo job takes 1-4 min on 2 busy cores
    status = client.get_job_status(job_id)
    while status not in terminal and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    if status not in terminal:
        client.stop_job(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {job_id} ended {status}:\n{logs[-4000:]}"
    info = client.get_job_info(job_id)
    assert info.entrypoint == entrypoint

    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "run" and summary["counts"]["selected"] == N
    assert len((out / "selected.jsonl").read_bytes().splitlines()) == N
    manifest = [json.loads(x) for x in (out / "selected.manifest.jsonl").read_text().splitlines()]
    assert [m["rank"] for m in manifest] == list(range(1, N + 1))
    assert f"selected {N} of" in logs
    # the job ran on the head's Ray (it joined through RAY_ADDRESS) rather than starting its own:
    # the head knows its driver only if it connected
    assert info.driver_info is not None and info.driver_info.node_ip_address == "127.0.0.1"

    # every server of the head listens on loopback only (IPv4, or IPv4-mapped on a dual-stack socket)
    listening = _listening(ray_head["temp"])
    assert listening and all(_loopback(a) for a in listening), listening
    print(f"\njob {job_id}: {time.monotonic() - t0:.1f} s from submit to checked output")
