"""A real Kubernetes control plane (etcd + kube-apiserver [+ kube-scheduler]) on 127.0.0.1 for tests.

The binaries come from ``scripts/kube-control-plane`` (Debian's ``kubernetes`` 1.20 source package,
built once per machine into ``${NOS_KUBE_CACHE:-~/.cache/nos-kube}/bin``) and Debian's
``etcd-server`` (``/usr/bin/etcd``). Every process runs in its own process group and gets
``PR_SET_PDEATHSIG`` (SIGKILL), so nothing survives the test run, not even a killed pytest.

Stdlib only (``openssl`` CLI for the keys), so importing this module never fails on a machine
without the binaries; ``find_binaries`` says why the tier cannot run there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
import yaml
from lightkube import AsyncClient, KubeConfig

ADMIN_TOKEN = "nos-realkube-admin-token"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


T = TypeVar("T")


class ControlPlaneError(RuntimeError):
    """A component did not start; the message carries the tail of its log."""


@dataclass(frozen=True)
class Binaries:
    apiserver: Path
    scheduler: Path | None
    etcd: Path


def default_bin_dir() -> Path:
    cache = os.environ.get("NOS_KUBE_CACHE") or str(Path.home() / ".cache" / "nos-kube")
    return Path(cache) / "bin"


def find_binaries() -> tuple[Binaries | None, str]:
    """The binaries to use, or None and the reason they are missing (for ``pytest.skip``).

    ``NOS_KUBE_BIN``: a directory holding kube-apiserver (and kube-scheduler), default
    ``${NOS_KUBE_CACHE:-~/.cache/nos-kube}/bin``. ``NOS_ETCD``: the etcd binary, default the one
    in that directory, else ``etcd`` on PATH.
    """
    env_dir = os.environ.get("NOS_KUBE_BIN")
    bin_dir = Path(env_dir) if env_dir else default_bin_dir()
    origin = "$NOS_KUBE_BIN" if env_dir else "the default cache dir"
    apiserver = bin_dir / "kube-apiserver"
    if not os.access(apiserver, os.X_OK):
        return None, (
            f"no kube-apiserver in {bin_dir} ({origin}); build it with scripts/kube-control-plane "
            "or point NOS_KUBE_BIN at a directory holding kube-apiserver and kube-scheduler"
        )
    scheduler = bin_dir / "kube-scheduler"
    etcd_env = os.environ.get("NOS_ETCD")
    etcd_path = etcd_env or (str(bin_dir / "etcd") if (bin_dir / "etcd").exists() else shutil.which("etcd"))
    if not etcd_path or not os.access(etcd_path, os.X_OK):
        return None, "no etcd binary (apt-get install etcd-server, or set NOS_ETCD)"
    found = Binaries(apiserver, scheduler if os.access(scheduler, os.X_OK) else None, Path(etcd_path))
    return found, ""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the usual bind-to-0 probe; the OS does not hand it out again
    soon, and the process binding it next is ours)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the spawning thread (pytest) dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Process:
    """One component, started in its own process group, output in ``log``."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only prctl: safe between fork and exec
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``STOP_TIMEOUT_S``."""
        if self.popen is None:
            return
        pgid = self.popen.pid  # start_new_session: the pid is the process group id
        for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            try:
                self.popen.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Reap anything else left in the group (none of these components fork, but be sure).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(pki: Path) -> None:
    """A CA, a serving cert for 127.0.0.1/localhost and a service-account RSA key pair.

    The venv has no ``cryptography``, so this uses the ``openssl`` CLI (in every Debian image).
    """
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=nos-realkube-ca",
        "-days", "2", "-out", "ca.crt", cwd=pki,
    )  # fmt: skip
    _openssl("genrsa", "-out", "apiserver.key", "2048", cwd=pki)
    _openssl("req", "-new", "-key", "apiserver.key", "-subj", "/CN=kube-apiserver", "-out", "apiserver.csr", cwd=pki)
    (pki / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "apiserver.crt", cwd=pki,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _wait_until(
    what: str, proc: Process, check: Any, timeout: float = STARTUP_TIMEOUT_S, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ControlPlaneError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(interval)
    raise ControlPlaneError(f"{what} not reached within {timeout:.0f} s (last error: {last_error})\n{proc.log_tail()}")


@dataclass
class ControlPlane:
    """Connection info of a running control plane, plus its processes (stopped by ``stop``)."""

    workdir: Path
    binaries: Binaries
    url: str = ""
    token: str = ADMIN_TOKEN
    ca_file: Path = field(default_factory=Path)
    kubeconfig_path: Path = field(default_factory=Path)
    etcd_url: str = ""
    version: str = ""
    processes: list[Process] = field(default_factory=list)

    # -- connection --------------------------------------------------------------------------------
    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "realkube", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "realkube", "context": {"cluster": "realkube", "user": "admin"}}],
            "current-context": "realkube",
        }

    def lightkube_config(self) -> KubeConfig:
        return KubeConfig.from_file(self.kubeconfig_path)

    def client(self, timeout: float = 30.0) -> AsyncClient:
        """A new lightkube ``AsyncClient`` (close it: ``await client.close()``)."""
        return AsyncClient(self.lightkube_config(), timeout=httpx2.Timeout(timeout), trust_env=False)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """A raw authenticated GET (for readiness probes and debugging)."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as resp:
                return int(resp.status), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, with_scheduler: bool = False) -> None:
        try:
            self._start_etcd()
            self._start_apiserver()
            if with_scheduler:
                self.start_scheduler()
        except BaseException:
            self.stop()
            raise

    def _start_etcd(self) -> None:
        client_port, peer_port = free_port(), free_port()
        data = self.workdir / "etcd-data"
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        etcd = Process(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=realkube",
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=realkube={peer}",
                "--initial-cluster-state=new",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        self.processes.append(etcd)
        etcd.start()

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        _wait_until("etcd /health", etcd, healthy)

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        make_pki(pki)
        self.ca_file = pki / "ca.crt"
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        api = Process(
            "kube-apiserver",
            [
                str(self.binaries.apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                "--insecure-port=0",  # 1.20 rejects any other value
                f"--cert-dir={self.workdir / 'certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=AlwaysAllow",
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--profiling=false",
                "--logtostderr=true",
                "--v=1",
            ],
            self.workdir / "kube-apiserver.log",
        )
        self.processes.append(api)
        api.start()
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self.kubeconfig_path.write_text(yaml.safe_dump(self.kubeconfig()))

        def ready() -> bool:
            status, _ = self.get("/readyz")
            return status == 200

        _wait_until("kube-apiserver /readyz", api, ready)
        # /readyz covers the bootstrap post-start hooks; the default namespace appears right after.
        _wait_until("namespace default", api, lambda: self.get("/api/v1/namespaces/default")[0] == 200)
        status, body = self.get("/version")
        self.version = json.loads(body).get("gitVersion", "") if status == 200 else ""

    def start_scheduler(self) -> Process:
        """Start kube-scheduler against this apiserver (insecure and secure ports off)."""
        if self.binaries.scheduler is None:
            raise ControlPlaneError("no kube-scheduler binary next to kube-apiserver")
        sched = Process(
            "kube-scheduler",
            [
                str(self.binaries.scheduler),
                f"--kubeconfig={self.kubeconfig_path}",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--logtostderr=true",
                "--v=1",
            ],
            self.workdir / "kube-scheduler.log",
        )
        self.processes.append(sched)
        sched.start()
        time.sleep(0.5)
        if not sched.alive():
            raise ControlPlaneError(f"kube-scheduler exited at once:\n{sched.log_tail()}")
        return sched

    def stop_process(self, proc: Process) -> None:
        proc.stop()
        if proc in self.processes:
            self.processes.remove(proc)

    def stop(self) -> None:
        """Stop everything, newest first (scheduler, apiserver, etcd); drop the etcd data."""
        while self.processes:
            self.processes.pop().stop()
        shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)


@contextlib.contextmanager
def running_control_plane(workdir: Path, binaries: Binaries, with_scheduler: bool = False) -> Iterator[ControlPlane]:
    cp = ControlPlane(workdir=workdir, binaries=binaries)
    cp.start(with_scheduler=with_scheduler)
    try:
        yield cp
    finally:
        cp.stop()


def attach_logs(item: Any, report: Any, lines: int = 60) -> None:
    """On a failed test that used the ``control_plane`` fixture, add the tails of the component logs
    to its report (the server side of a failure is otherwise invisible)."""
    if not report.failed:
        return
    cp = item.funcargs.get("control_plane") if hasattr(item, "funcargs") else None
    if isinstance(cp, ControlPlane):
        for proc in cp.processes:
            report.sections.append((f"{proc.name} log ({proc.log})", proc.log_tail(lines)))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition() -> dict[str, str]:
    """The Ready condition a kubelet reports (the control plane has no kubelet; tests play it)."""
    now = now_rfc3339()
    return {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "fake kubelet",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something other than None; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(interval)
