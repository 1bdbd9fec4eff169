"""A one-node SLURM cluster on this machine, for the tests of compare.sh --launcher slurm.

    python tests/slurm_cluster.py start DIR   # prints: export SLURM_CONF=DIR/slurm.conf
    python tests/slurm_cluster.py stop DIR

Debian's slurmctld, slurmd and slurm-client (22.05) and munge (installed by
scripts/ci/setup_slurm.sh as root); a munge key, the daemons' configuration, state, spool, logs and
pid files all in DIR; clients find the cluster through SLURM_CONF. Two partitions as production
clusters have them: `low` (the default), whose jobs a job of `high` preempts (requeued, SIGTERM
then SIGKILL after GRACE seconds), and `high` with a time limit; the node has GPUS counted GPUs
of type GPU_TYPE (no devices) for the GPU requests. Stopped by the pid files the
daemons wrote, nothing else.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fairseq_normmatters.recipes.run.command import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "srun")
START_TIMEOUT = 60  # seconds for the node to come up idle
STOP_TIMEOUT = 30  # seconds for the cancelled jobs to end
LOW, HIGH = "low", "high"  # partitions: the default one, and one whose jobs preempt (requeue) the low one's
GRACE = 30  # seconds between a preemption's SIGTERM and its SIGKILL
HIGH_MAX_MINUTES = 10  # the high partition's time limit: a job asking for more can never start there
GPU_TYPE, GPUS = "fake", 2  # GPUs of the node, for the GPU requests' tests, on two character devices
GPU_FILES = "/dev/null,/dev/zero"  # SLURM drops a GPU without a device file


def missing_tools():
    """The programs of the cluster that are not installed (empty when it can start)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    if not missing and os.geteuid() != 0:
        missing.append("root (the daemons run as root and munge)")
    return missing


def configuration(root: Path, cpus: int, memory_mb: int) -> str:
    host = socket.gethostname()
    return "\n".join([
        "ClusterName=normmatters-test", f"SlurmctldHost={host}", "SlurmUser=root", "AuthType=auth/munge",
        "CredType=cred/munge", f"AuthInfo=socket={root / 'munge' / 'socket'}",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill",
        "ReturnToService=2", "JobRequeue=1", "KillWait=5", "MinJobAge=600", "SlurmdTimeout=60",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}", f"SlurmdLogFile={root / 'slurmd.log'}",
        "GresTypes=gpu", f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{GPU_TYPE}:{GPUS} State=UNKNOWN",
        "PreemptType=preempt/partition_prio", "PreemptMode=REQUEUE",
        f"PartitionName={LOW} Nodes={host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime={GRACE}",
        f"PartitionName={HIGH} Nodes={host} MaxTime={HIGH_MAX_MINUTES} State=UP PriorityTier=2 PreemptMode=OFF", ""])


def gres_configuration() -> str:
    """GPUs standing for real ones (two character devices every Linux has): a job asks for them
    by type and gets them."""
    return f"NodeName={socket.gethostname()} Name=gpu Type={GPU_TYPE} File={GPU_FILES}\n"


def start(root) -> dict:
    """Start munged, slurmctld and slurmd with everything in `root`; returns the environment
    (SLURM_CONF) that clients need. Raises RuntimeError with the daemons' logs if the node does
    not come up."""
    root = Path(root)
    for folder in ("state", "spool", "munge"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    munge = pwd.getpwnam("munge")
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    for path in (root / "munge", key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    key.chmod(0o400)
    (root / "munge" / "log").touch()
    os.chown(root / "munge" / "log", munge.pw_uid, munge.pw_gid)
    subprocess.run(["runuser", "-u", "munge", "--", "munged", "--key-file", str(key),
                    "--socket", str(root / "munge" / "socket"), "--pid-file", str(root / "munge" / "munged.pid"),
                    "--log-file", str(root / "munge" / "log"), "--seed-file", str(root / "munge" / "seed")],
                   check=True)
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    (root / "slurm.conf").write_text(configuration(root, os.cpu_count(), memory_mb))
    (root / "gres.conf").write_text(gres_configuration())
    environment = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    subprocess.run(["slurmctld"], env=environment, check=True)
    subprocess.run(["slurmd"], env=environment, check=True)
    wait_until_idle(root, environment)
    return {"SLURM_CONF": str(root / "slurm.conf")}


def wait_until_idle(root: Path, environment) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=environment, capture_output=True, text=True)
        if state.returncode == 0 and state.stdout.strip() == "idle":
            return
        time.sleep(0.5)
    logs = "\n".join(f"{log.name}:\n{log.read_text(errors='replace')[-2000:]}"
                     for log in (root / "slurmctld.log", root / "slurmd.log") if log.exists())
    raise RuntimeError(f"the test cluster's node did not become idle in {START_TIMEOUT} s:\n{logs}")


def stop(root) -> None:
    """Cancel every job and wait for them to end, then stop the daemons by their pid files (slurmd, slurmctld, munged) and
    wait for each to exit."""
    root = Path(root)
    environment = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    if (root / "slurmctld.pid").exists():
        subprocess.run(["scancel", "--full", "--user", pwd.getpwuid(os.geteuid()).pw_name], env=environment,
                       capture_output=True)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and subprocess.run(
                ["squeue", "--noheader"], env=environment, capture_output=True, text=True).stdout.strip():
            time.sleep(0.5)
    for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"):
        if pid_file.exists():
            stop_process(int(pid_file.read_text().split()[0]))


def stop_process(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        print(f"export SLURM_CONF={start(sys.argv[2])['SLURM_CONF']}")
    else:
        stop(sys.argv[2])
