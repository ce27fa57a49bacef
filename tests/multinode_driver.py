"""Driver of tests/test_multinode.py, run in its own process: a Ray cluster of a head and two worker
nodes on this machine (real raylets, loopback, no dashboard), separate from the test session's.

    python tests/multinode_driver.py WORKDIR

WORKDIR holds job-single.yaml, job-multi.yaml and job-killed.yaml (written by the test). The three
jobs run one after the other on this cluster (the driver joins it first; the jobs join the driver's
Ray). "single" runs every stage (the tagger's actors on the workers) and selects in this process;
"multi" and "killed" select on two shard actors, starting from a copy of single's finished ingest,
tag, score and assemble stages (their markers match, so only select and write run). "killed" kills
worker_a (raylet and its actor processes, SIGKILL) once `KILL_ROUND` rounds of its selection are
committed. What was observed (the node of every actor, restarts, seconds) goes to
WORKDIR/report.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

# Every Ray process binds to loopback (Ray's single-machine mode); set before ray is imported.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ADDRESS"] = ""
# Session files and the "current cluster" address file of this cluster stay out of /tmp/ray, so a
# concurrent `address="auto"` elsewhere never finds it (short path: Unix socket names are limited).
# The test gives the folder (and removes it); run by hand, a new one.
if not os.environ.get("RAY_TMPDIR"):
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="mr-mn-", dir="/tmp")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from mig_ray.job.jobfile import load_job  # noqa: E402
from mig_ray.job.pipeline import run_job  # noqa: E402

KILL_ROUND = 3
WORKER_RESOURCES = {"mig_worker": 4}  # both workers carry it: a shard of a dead worker can move


def where(actor) -> tuple[str, int]:
    """(node id, pid) of the process an actor runs in, asked from the actor itself."""
    return ray.get(actor.__ray_call__.remote(lambda self: (ray.get_runtime_context().get_node_id(),
                                                           os.getpid())), timeout=120)


def pid_gone(pid: int) -> bool:
    """Exited (a zombie whose new parent has not reaped it yet counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def main(work: Path) -> None:
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={
        # port 0: the GCS binds a port of its own choosing (no port probed, freed and raced for)
        "gcs_server_port": 0, "node_ip_address": "127.0.0.1", "num_cpus": 2,
        "include_dashboard": False, "dashboard_agent_listen_port": None,
        # a killed node is declared dead after ~5 s of failed health checks (Ray's default: longer)
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}})
    workers = {name: cluster.add_node(node_ip_address="127.0.0.1", num_cpus=2,
                                      resources={name: 1, **WORKER_RESOURCES})
               for name in ("worker_a", "worker_b")}
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    names = {cluster.head_node.node_id: "head"} | {n.node_id: name for name, n in workers.items()}
    report: dict = {"nodes": sorted(names.values()), "seconds": {"cluster": round(time.monotonic() - t0, 1)}}

    def run(name: str, hook=None) -> dict:
        path = work / f"job-{name}.yaml"
        t = time.monotonic()
        summary = run_job(load_job(path), str(path), on_round=hook)
        report["seconds"][name] = round(time.monotonic() - t, 1)
        return {"greedy": summary["greedy"], "counts": summary["counts"],
                "ran": [k for k, row in summary["stages"].items() if row["status"] != "skipped"]}

    report["single"] = run("single")
    # every actor so far (the tagger's Ray Data actor pool among them) and the node it ran on
    report["actors_after_single"] = [
        {"class": a["ActorClassName"], "node": names.get(a["Address"]["NodeID"], "?")}
        for a in ray._private.state.actors().values()]
    later = {"select", "write", "selected.jsonl", "selected.manifest.jsonl", "summary.json", "run.json"}
    for name in ("multi", "killed"):
        shutil.copytree(work / "single", work / name,
                        ignore=lambda d, files: later if Path(d) == work / "single" else set())

    placed: dict[int, list] = {}
    report["multi"] = run("multi", lambda r, actors: placed.setdefault(r, [
        names[where(a)[0]] for a in actors]) if r == 0 else None)
    report["multi_shard_nodes"] = placed[0]

    seen: dict = {}

    def kill_worker_a(r: int, actors: list) -> None:
        if r == KILL_ROUND:
            at = [where(a) for a in actors]
            seen["before"] = [names[node] for node, _ in at]
            victims = [pid for node, pid in at if names[node] == "worker_a"]
            cluster.remove_node(workers["worker_a"], allow_graceful=False)  # SIGKILL: raylet & co.
            for pid in victims:  # the machine is gone: so are the actor processes it ran
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not all(pid_gone(p) for p in victims):  # the observed event: the processes are gone
                if time.monotonic() > deadline:
                    raise RuntimeError(f"actor processes {victims} still alive after SIGKILL")
                time.sleep(0.05)
            seen["killed_round"] = r
            seen["killed_pids"] = victims
        elif r == KILL_ROUND + 1 and "after" not in seen:
            seen["after"] = [names[where(a)[0]] for a in actors]

    report["killed"] = run("killed", kill_worker_a)
    report["killed_shard_nodes"] = seen
    (work / "report.json").write_text(json.dumps(report, indent=2))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
