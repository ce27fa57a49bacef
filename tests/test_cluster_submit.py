"""`ray job submit` for real: a local Ray head (loopback, free ports, its own temp dir), a job sent
through the Ray Jobs API with the repository as its working_dir, its output checked, the head stopped.

Only the head this test starts is stopped (its process group, then any straggler whose command line
names its temp dir); the session cluster of tests/conftest.py and anyone else's Ray are untouched.
"""

from __future__ import annotations

import ipaddress
import itertools
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
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
N = 30  # selection.n of jobs/demo.yaml


@contextmanager
def reserved_ports() -> Iterator[Iterator[int]]:
    """Ports for Ray's client server (the one server Ray cannot be asked to pick a port for) that
    nothing else can take before Ray binds it. A port chosen, freed and handed to Ray later could be
    taken in between: by any bind to port 0 (Ray's own servers, starting beside it, bind dozens),
    which is how this test once failed with two ports "taken". Here each port stays bound by this
    test, with SO_REUSEPORT and without listening, until the head is discarded: the kernel never
    gives a bound port to a port-0 bind, a plain bind of it fails, and Ray's gRPC client server
    (SO_REUSEPORT is gRPC's default on Linux) binds beside it and is the only one listening."""
    held: list[socket.socket] = []

    def ports() -> Iterator[int]:
        while True:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
            held.append(s)
            yield s.getsockname()[1]

    try:
        yield ports()
    finally:
        for s in held:
            s.close()


DASHBOARD_LINE = re.compile(rb"RAY_API_SERVER_ADDRESS='(http://127\.0\.0\.1:\d+)'")
HEAD_ATTEMPTS = 5


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


def _serves(temp: Path, port: int) -> bool:
    """Whether one of the head's own processes listens on `port` (from then on nobody can take it)."""
    for p in _ours(temp):
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            return True
    return False


def _client_port_taken(log: Path, temp: Path, port: int) -> bool:
    """Whether the head died because its client server could not bind `port`: `ray start --block`
    then kills the whole head and exits 1, its output and the client server's log saying so."""
    needle = f"Failed to bind to address 127.0.0.1:{port}".encode()
    logs = [log, *temp.glob("session_*/logs/ray_client_server*.err")]
    return any(needle in f.read_bytes() for f in logs if f.is_file())


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


def _discard(head: subprocess.Popen, temp: Path, log: Path) -> None:
    _stop_head(head, temp)
    shutil.rmtree(temp, ignore_errors=True)
    log.unlink(missing_ok=True)


def _head_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    return env | {
        # jobs run `mig-ray` from this venv, as a cluster image has it on PATH
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
        # single-machine mode: every Ray server binds to 127.0.0.1 (else GCS and raylet listen on *)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # the head's own token (Ray 2.60 token auth), not whatever ~/.ray/auth_token holds
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
    }


def start_head(ports: Iterator[int], timeout: float = 120) -> dict:
    """A Ray head bound to 127.0.0.1 with the dashboard (the Jobs API needs it), up and answering.

    Port 0 everywhere: Ray binds each server to a port of its own choosing and the test reads the
    dashboard's and the GCS's back. Ray requires a fixed port for its client server (1024..65535,
    no 0; this test does not use that server), taken from `ports` (reserved_ports()): if another
    process binds it first (only a port not reserved can be), the client server dies, `ray start
    --block` stops the head, and the head is started again (fresh temp dir) with the next port.
    The head counts as up only once its client server listens."""
    from ray.job_submission import JobSubmissionClient

    token = uuid.uuid4().hex
    env, auth, taken = _head_env(token), {"Authorization": f"Bearer {token}"}, []
    for _ in range(HEAD_ATTEMPTS):
        port, deadline = next(ports), time.monotonic() + timeout
        # a short temp dir: Ray puts unix sockets under it and their paths are limited to ~107 bytes
        temp = Path(tempfile.mkdtemp(prefix="mrh", dir="/tmp"))
        log = temp.parent / f"{temp.name}.log"
        cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--port=0", "--dashboard-host=127.0.0.1", "--dashboard-port=0",
               "--include-dashboard=true", f"--ray-client-server-port={port}",
               "--dashboard-agent-listen-port=0", "--dashboard-agent-grpc-port=0", "--metrics-export-port=0",
               "--runtime-env-agent-port=0", "--node-manager-port=0", "--object-manager-port=0",
               "--num-cpus=4", "--disable-usage-stats", f"--temp-dir={temp}"]
        with open(log, "wb") as out:
            head = subprocess.Popen(cmd, env=env, cwd=temp, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            client_obj, last, address, gcs, serving = None, None, None, None, False
            while time.monotonic() < deadline and head.poll() is None:
                if address is None or gcs is None:
                    address, gcs = _read_back(log, temp)
                elif client_obj is None:
                    try:
                        client_obj = JobSubmissionClient(address, headers=auth)
                        client_obj.list_jobs()
                    except Exception as e:  # the dashboard and its job agent take a few seconds
                        client_obj, last = None, e
                elif not serving:
                    serving = _serves(temp, port)
                if client_obj is not None and serving:
                    return {"client": client_obj, "address": address, "gcs": gcs, "temp": temp,
                            "head": head, "log": log, "client_port": port, "ports_taken": taken}
                time.sleep(0.5)
            head.poll()
            if head.returncode is not None and _client_port_taken(log, temp, port):
                taken.append(port)
                _discard(head, temp, log)
                continue
            pytest.fail(f"Ray head did not come up (exit {head.returncode}, client server on "
                        f"{port}: {'listening' if serving else 'not listening'}, last error {last!r}):\n"
                        + log.read_text(errors="replace")[-3000:])
        except BaseException:
            _discard(head, temp, log)
            raise
    pytest.fail(f"Ray head: client server ports {taken} were each taken before Ray could bind them")


@pytest.fixture
def ray_head() -> Iterator[dict]:
    with reserved_ports() as ports:
        head = start_head(ports)
        try:
            yield head
        finally:
            _discard(head["head"], head["temp"], head["log"])


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


def test_head_start_retries_when_the_client_server_port_is_taken():
    """The race start_head() guards against, made certain: the first port offered is held by this
    test with a plain bind (as another process could hold a port it was offered); the head that
    cannot bind it is stopped and a second one comes up on the next port, a reserved one that only
    Ray's client server can bind, so exactly one port is taken."""
    with socket.socket() as held, reserved_ports() as ports:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        head = start_head(itertools.chain([taken], ports))
        try:
            assert head["ports_taken"] == [taken]
            assert head["client_port"] != taken and _serves(head["temp"], head["client_port"])
            assert head["client"].list_jobs() == []
        finally:
            _discard(head["head"], head["temp"], head["log"])
    assert not _ours(head["temp"]) and not head["temp"].exists()
