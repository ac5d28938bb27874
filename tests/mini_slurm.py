"""A single-node SLURM started (and stopped) by the test suite itself.

Recipe measured on these machines (Debian bookworm, root, no systemd): the Debian packages
``slurmctld slurmd slurm-client munge``; each daemon runs in the foreground under
``setsid`` with its PID recorded; ``munged`` runs as user ``munge`` with a private socket
directory (``AuthInfo=socket=...`` in slurm.conf); no cgroups (``proctrack/linuxproc``,
``task/none``, ``jobacct_gather/none``, no accounting); the node line is what
``slurmd -C`` prints. Everything lives under one directory and private ports, so it
does not collide with a site's SLURM; clients find it through ``$SLURM_CONF``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "munged")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here (the reason says why); tests skip with it."""


def ensure_packages() -> None:
    """Install the Debian packages when a binary is missing (root and apt-get needed)."""
    if all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in BINARIES):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and installing it needs root and apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(argv[:2])} failed: {r.stderr.strip()[-300:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MiniSlurm:
    """One controller + one compute node on this machine, rooted at ``root``.

    Use as a context manager; ``env`` holds the variables clients need (``SLURM_CONF``).
    """

    def __init__(self, root: Path, name: str = "selfcaltest"):
        self.root = root
        self.name = name
        self.pids: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.conf = root / "slurm.conf"
        self.sock_dir = Path("/run/munge") / f"{name}-{os.getpid()}"
        self.env = {"SLURM_CONF": str(self.conf)}

    # -- set-up ---------------------------------------------------------------------------
    def _spawn(self, label: str, argv: list[str]) -> None:
        """Run a daemon in the foreground in its own session (setsid), PID recorded."""
        log = open(self.root / f"{label}.out", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **self.env), start_new_session=True)
        self.pids[label] = proc.pid
        self.procs[label] = proc
        (self.root / f"{label}.pid").write_text(str(proc.pid))

    def _start_munge(self) -> None:
        # Key, seed and socket in a directory of its own that user munge can reach (the
        # test's tmp directories are root-only: munged cannot canonicalize paths there).
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.sock_dir, "munge", "munge")
        self.sock_dir.chmod(0o755)
        key = self.sock_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        d = self.sock_dir
        self._spawn("munged", ["runuser", "-u", "munge", "--", "munged", "-F", "--force",
                               f"--socket={d}/munge.socket.2", f"--key-file={key}",
                               f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                               f"--seed-file={d}/munged.seed"])
        self._wait(lambda: (d / "munge.socket.2").exists(), 20, "munged did not create its socket")

    def _write_conf(self) -> None:
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        node_line = next(ln for ln in node.splitlines() if ln.startswith("NodeName="))
        host = node_line.split()[0].split("=", 1)[1]
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            f"ClusterName={self.name}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.sock_dir}/munge.socket.2",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.root}/state",
            f"SlurmdSpoolDir={self.root}/spool",
            f"SlurmctldPidFile={self.root}/slurmctld.pidfile",
            f"SlurmdPidFile={self.root}/slurmd.pidfile",
            f"SlurmctldLogFile={self.root}/log/slurmctld.log",
            f"SlurmdLogFile={self.root}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "KillWait=5",
            node_line.replace(" UpTime=", " #").split(" #")[0] + " State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def start(self) -> "MiniSlurm":
        ensure_packages()
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test SLURM needs root (munged runs as user munge)")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), 60, "slurmctld did not come up")
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
            self._wait(lambda: self._ok(["sinfo", "-h", "-o", "%t"], "idle"), 60, "the node did not become idle")
        except BaseException:
            self.stop()
            raise
        return self

    # -- use ------------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True) -> str:
        r = subprocess.run(list(argv), capture_output=True, text=True, env=dict(os.environ, **self.env),
                           timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
        return r.stdout

    def job_ids(self) -> list[str]:
        """Ids of the jobs that are pending or running."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def cancel_all(self) -> list[str]:
        ids = self.job_ids()
        if ids:
            self.run("scancel", *ids)
        return ids

    def _ok(self, argv: list[str], word: str) -> bool:
        try:
            return word in self.run(*argv, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _wait(self, cond, timeout: float, what: str) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if cond():
                return
            for label, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.root / f"{label}.out").read_text(errors="replace")[-600:]
                    raise SlurmUnavailable(f"{label} exited: {tail.strip()}")
            time.sleep(0.5)
        raise SlurmUnavailable(f"{what} within {timeout:.0f} s")

    # -- tear-down ------------------------------------------------------------------------
    def stop(self) -> None:
        if self.pids.get("slurmctld"):
            self._ok(["scancel", "--user=root"], "")
        for label in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(label, None)
            if pid is None:
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                for _ in range(40):
                    try:
                        os.kill(pid, 0)
                        time.sleep(0.1)
                    except ProcessLookupError:
                        break
                else:
                    continue
                break
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)  # reap: no zombies left behind
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def __enter__(self) -> "MiniSlurm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
