"""A single-node SLURM cluster on localhost for the sweep test: munged, slurmctld and slurmd as root.

Everything the daemons write (key, socket, state, spool, pid and log files, ``slurm.conf``) lives in one
temporary folder, on ports picked free at start, so a cluster already running on the machine is left alone.
There is no accounting database (``sacct`` does not work here, as on many small clusters). The daemons run
in the foreground as children of the test, and ``stop`` ends each by its process id.

Needs Debian's ``slurm-wlm`` and ``munge`` packages and root (slurmd starts jobs as their user);
``requirements_missing`` says what is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
INSTALL = "apt-get install -y slurm-wlm munge"
START_TIMEOUT_S = 60


@dataclass
class SlurmCluster:
    """A running cluster: its folder, ``slurm.conf``, node name and the daemons' processes."""

    folder: Path
    conf: Path
    node: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment of a client (sbatch, squeue, submitit) of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log_tail(self, lines: int = 30) -> str:
        """The end of each daemon's log, for a failure message."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            path = self.folder / "log" / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else ["(no log)"]
            parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts)


def requirements_missing() -> str:
    """What keeps this machine from starting the cluster, or an empty string."""
    missing = [name for name in PROGRAMS if not Path(program(name)).is_file()]
    problems = []
    if missing:
        problems.append(f"programs not found: {', '.join(missing)}")
    if os.geteuid() != 0:
        problems.append("not running as root")
    if not problems:
        return ""
    return (f"the SLURM test starts a one-node SLURM cluster on localhost, which needs Debian's slurm-wlm "
            f"and munge packages ({INSTALL}) and root; {'; '.join(problems)}")


def program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_conf(folder: Path, node: str) -> Path:
    """``slurm.conf`` of a one-node cluster without accounting, every path inside ``folder``."""
    cpus = os.cpu_count() or 1
    lines = {
        "ClusterName": "brainvlmtest", "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmctldPort": free_port(), "SlurmdPort": free_port(),
        "AuthType": "auth/munge", "CredType": "cred/munge", "AuthInfo": f"socket={folder / 'munge.socket'}",
        "SlurmUser": "root", "SlurmdUser": "root", "MpiDefault": "none",
        "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "SwitchType": "switch/none",
        "SchedulerType": "sched/builtin", "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_CPU",
        "AccountingStorageType": "accounting_storage/none", "JobAcctGatherType": "jobacct_gather/none",
        "JobCompType": "jobcomp/none", "ReturnToService": 2, "MailProg": "/bin/true",
        "StateSaveLocation": folder / "state", "SlurmdSpoolDir": folder / "spool",
        "SlurmctldPidFile": folder / "run" / "slurmctld.pid", "SlurmdPidFile": folder / "run" / "slurmd.pid",
        "SlurmctldLogFile": folder / "log" / "slurmctld.log", "SlurmdLogFile": folder / "log" / "slurmd.log",
        "SlurmctldDebug": "info", "SlurmdDebug": "info", "MinJobAge": 300, "KillWait": 5,
    }
    text = "".join(f"{key}={value}\n" for key, value in lines.items())
    text += f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1024 State=UNKNOWN\n"
    text += f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP\n"
    path = folder / "slurm.conf"
    path.write_text(text)
    return path


def write_munge_key(folder: Path) -> Path:
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    return key


def start(folder: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in ``folder`` and wait until the node is idle.

    Raises:
        RuntimeError: what is missing (packages, root), or a daemon that did not come up, with its log.
    """
    missing = requirements_missing()
    if missing:
        raise RuntimeError(missing)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for sub in ("state", "spool", "run", "log"):
        (folder / sub).mkdir(mode=0o700, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(folder, write_conf(folder, node), node)
    key = write_munge_key(folder)
    try:
        launch(cluster, "munged", [program("munged"), "--foreground", "--force",
                                   f"--socket={folder / 'munge.socket'}", f"--key-file={key}",
                                   f"--log-file={folder / 'log' / 'munged.log'}",
                                   f"--pid-file={folder / 'run' / 'munged.pid'}",
                                   f"--seed-file={folder / 'munged.seed'}"])
        wait_for((folder / "munge.socket").exists, cluster, "munged's socket")
        launch(cluster, "slurmctld", [program("slurmctld"), "-D", "-i", "-f", str(cluster.conf)])
        launch(cluster, "slurmd", [program("slurmd"), "-D", "-N", node, "-f", str(cluster.conf)])
        wait_for(lambda: node_state(cluster) == "idle", cluster, f"node {node} idle in sinfo")
    except BaseException:
        stop(cluster)
        raise
    return cluster


def launch(cluster: SlurmCluster, name: str, command: list[str]) -> None:
    with open(cluster.folder / "log" / f"{name}.out", "w") as log:  # the child keeps its own descriptor
        cluster.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                   env=cluster.env, start_new_session=True)


def wait_for(ready, cluster: SlurmCluster, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ended = {name: p.returncode for name, p in cluster.processes.items() if p.poll() is not None}
        if ended:
            raise RuntimeError(f"SLURM test cluster: {ended} exited while waiting for {what}\n"
                               f"{cluster.log_tail()}")
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"SLURM test cluster: no {what} after {START_TIMEOUT_S} s\n{cluster.log_tail()}")


def node_state(cluster: SlurmCluster) -> str:
    out = subprocess.run(["sinfo", "--noheader", "--format=%t", f"--nodes={cluster.node}"], env=cluster.env,
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def stop(cluster: SlurmCluster) -> None:
    """Cancel the cluster's jobs, then end slurmd, slurmctld and munged, each by its process id."""
    if "slurmctld" in cluster.processes and cluster.processes["slurmctld"].poll() is None:
        subprocess.run(["scancel", f"--user={os.getuid()}"], env=cluster.env, capture_output=True,
                       timeout=30, check=False)
        time.sleep(1)
    for name in ("slurmd", "slurmctld", "munged"):
        process = cluster.processes.get(name)
        if process is None or process.poll() is not None:
            continue
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
