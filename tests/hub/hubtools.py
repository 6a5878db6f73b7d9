"""Helpers for the GPU-pool tests: a real JupyterHub (with configurable-http-proxy) on loopback.

The hub runs as a subprocess in a temporary directory with DummyAuthenticator
(tests only), a fake pool of two exclusive "GPUs" (0, 1) and one shared MIG
instance (up to 3 users, 2 GiB each), and ``GPUPoolMixin`` over
``SimpleLocalProcessSpawner`` (servers run as the test user). No GPU is
needed: the pool only decides environment variables. Every request goes to
127.0.0.1, every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_ID = "MIG-5e3c1f2a-0b7d-4c1e-9a6f-2d8e4b7c9a10"
SHARED_CAP = 2 * 1024**3
POOL = [
    {"id": "0", "policy": "exclusive"},
    {"id": "1", "policy": "exclusive"},
    {"id": SHARED_ID, "policy": "shared", "max_users": 3, "memory_limit": "2G", "label": "1g.10gb"},
]

_CHP_PREFIX = Path(os.environ.get("TOMOLAB_CHP_PREFIX", Path.home() / ".cache" / "tomolab" / "chp"))


def find_proxy() -> str | None:
    """configurable-http-proxy on PATH or where .ci/hub-setup.sh puts it."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    local = _CHP_PREFIX / "node_modules" / ".bin" / "configurable-http-proxy"
    return str(local) if local.exists() else None


def hub_requirements_missing() -> str | None:
    """Why the real-hub tests cannot run here, or None."""
    for mod, pkg in [
        ("jupyterhub", "jupyterhub"),
        ("jupyter_server", "jupyter_server"),
        ("ipykernel", "ipykernel"),
        ("jupyterhub_idle_culler", "jupyterhub-idle-culler"),
    ]:
        try:
            __import__(mod)
        except ImportError:
            return f"{pkg} is not installed (pip install -e '.[test]')"
    if find_proxy() is None:
        return "configurable-http-proxy is not installed (run .ci/hub-setup.sh; needs node >= 20 and npm)"
    return None


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class HubError(AssertionError):
    pass


class Hub:
    """A JupyterHub subprocess and a small async client for its REST API."""

    def __init__(self, root: Path, *, extra_config: str = ""):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port, self.hub_port, self.proxy_api_port = free_ports(3)
        self.token = secrets.token_hex(16)
        self.proxy_token = secrets.token_hex(16)
        self.marker = uuid.uuid4().hex  # in every spawned server's environment
        self.ledger_path = root / "tomolab-gpu-pool.sqlite"
        self.log_path = root / "hub.log"
        self.proc: subprocess.Popen | None = None
        self._write_config(extra_config)

    # -- process -----------------------------------------------------------
    def _write_config(self, extra: str) -> None:
        cfg = f"""
        import sys
        from jupyterhub.spawner import SimpleLocalProcessSpawner
        from tomolab.hub import EndAllProcessesMixin, GPUPoolMixin

        class TestGPUSpawner(GPUPoolMixin, EndAllProcessesMixin, SimpleLocalProcessSpawner):
            pass  # as GPUPoolLocalProcessSpawner, but servers run as the test user

        def use_stub_for_stub_users(spawner):
            # users named stub-* get a millisecond-start HTTP stub instead of Jupyter
            if spawner.user.name.startswith("stub-"):
                spawner.cmd = [sys.executable, {str(Path(__file__).with_name("stub_server.py"))!r}]
                spawner.args = []

        c = get_config()  # noqa
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {self.port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {self.hub_port}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
        c.ConfigurableHTTPProxy.command = [{find_proxy()!r}]
        c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.JupyterHub.spawner_class = TestGPUSpawner
        c.JupyterHub.cleanup_servers = False
        c.JupyterHub.allow_named_servers = True
        c.JupyterHub.db_url = "sqlite:///{self.root / 'jupyterhub.sqlite'}"
        c.JupyterHub.cookie_secret_file = "{self.root / 'cookie_secret'}"
        c.JupyterHub.last_activity_interval = 3600
        c.JupyterHub.services = [{{"name": "tester", "api_token": {self.token!r}}}]
        c.JupyterHub.load_roles = [{{
            "name": "tester",
            "scopes": ["admin:users", "admin:servers", "admin:server_state", "access:servers", "list:users"],
            "services": ["tester"],
        }}]
        c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
        c.Spawner.args = ["--ServerApp.open_browser=False", "--ServerApp.allow_root=True"]
        c.Spawner.pre_spawn_hook = use_stub_for_stub_users
        c.Spawner.poll_interval = 1
        c.Spawner.poll_jitter = 0
        c.Spawner.start_timeout = 90
        c.Spawner.http_timeout = 90
        c.Spawner.interrupt_timeout = 5
        c.Spawner.environment = {{"TOMOLAB_HUB_TEST": {self.marker!r}, "JUPYTER_PLATFORM_DIRS": "1"}}
        c.SimpleLocalProcessSpawner.home_dir_template = "{self.root / 'home' / '{username}'}"
        c.GPUPoolMixin.gpu_devices = {POOL!r}
        c.GPUPoolMixin.gpu_pool_db = "{self.ledger_path}"
        """
        (self.root / "jupyterhub_config.py").write_text(textwrap.dedent(cfg) + "\n" + textwrap.dedent(extra))

    def start(self, timeout: float = 60) -> None:
        log = open(self.log_path, "a")
        log.write(f"\n===== hub start {time.strftime('%H:%M:%S')} =====\n")
        log.flush()
        env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=self.proxy_token)
        env.pop("JUPYTERHUB_API_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.root / "jupyterhub_config.py")],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HubError(f"the hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{self.port}/hub/api/users",
                    headers={"Authorization": f"token {self.token}"},
                )
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise HubError(f"the hub did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        """Stop the hub (SIGTERM); with cleanup_servers=False its servers keep running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise HubError(f"the hub did not stop within {timeout} s:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def server_processes(self) -> list[int]:
        """Live pids (servers and their kernels) that carry this hub's marker in their environment."""
        needle = f"TOMOLAB_HUB_TEST={self.marker}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
                if state in (b"Z", b"X"):
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(entry))
            except (OSError, IndexError):
                continue
        return pids

    def kill_all_servers(self) -> None:
        for pid in self.server_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- ledger ------------------------------------------------------------
    def allocations(self):
        from tomolab.hub import Ledger

        if not self.ledger_path.exists():
            return []
        return Ledger(str(self.ledger_path)).allocations()

    def holders(self) -> dict[str, str]:
        """user -> device (default servers)"""
        return {a.user: a.device for a in self.allocations() if a.server == ""}

    # -- REST API ----------------------------------------------------------
    async def request(self, method: str, path: str, body=None, *, url=None, timeout: float = 60, raw=False):
        from tornado.httpclient import AsyncHTTPClient

        client = AsyncHTTPClient(force_instance=True)
        try:
            resp = await client.fetch(
                url or f"http://127.0.0.1:{self.port}/hub/api{path}",
                method=method,
                headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
                body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
                allow_nonstandard_methods=True,
                request_timeout=timeout,
                raise_error=False,
            )
        finally:
            client.close()
        if raw:
            return resp
        if resp.code >= 400:
            raise HubAPIError(resp.code, resp.body.decode(errors="replace"), method, path)
        return json.loads(resp.body) if resp.body and resp.body.strip().startswith((b"{", b"[")) else None

    async def create_users(self, names) -> None:
        existing = {u["name"] for u in await self.request("GET", "/users")}
        new = [n for n in names if n not in existing]
        if new:
            await self.request("POST", "/users", {"usernames": new})

    async def user(self, name: str) -> dict:
        return await self.request("GET", f"/users/{name}")

    async def spawn(self, name: str, profile: str | None, server: str = "", timeout: float = 120) -> dict:
        """Start a server; return {"ok": bool, "code": int, "message": str}. Waits until ready or failed."""
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        body = {"profile": profile} if profile is not None else {}
        resp = await self.request("POST", path, body, raw=True, timeout=timeout)
        if resp.code >= 400:
            return {"ok": False, "code": resp.code, "message": _message(resp.body)}
        # 201 ready, 202 pending: wait for ready or failure
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = await self.user(name)
            srv = model.get("servers", {}).get(server)
            if srv is None:  # the spawn failed after the request returned
                return {"ok": False, "code": resp.code, "message": await self._progress_message(name, server)}
            if srv.get("ready"):
                return {"ok": True, "code": resp.code, "message": ""}
            await asyncio.sleep(0.5)
        raise HubError(f"{name}'s server neither started nor failed within {timeout} s:\n{self.log_tail()}")

    async def _progress_message(self, name, server):
        path = f"/users/{name}/servers/{server}/progress" if server else f"/users/{name}/server/progress"
        resp = await self.request("GET", path, raw=True, timeout=10)
        last = ""
        for line in resp.body.decode(errors="replace").splitlines():
            if line.startswith("data:"):
                last = json.loads(line[5:]).get("message", last)
        return last

    async def stop_server(self, name: str, server: str = "", timeout: float = 60) -> None:
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        resp = await self.request("DELETE", path, raw=True, timeout=timeout)
        if resp.code not in (202, 204, 400):
            raise HubAPIError(resp.code, resp.body.decode(errors="replace"), "DELETE", path)
        await self.wait_stopped(name, server, timeout)

    async def wait_stopped(self, name: str, server: str = "", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = await self.user(name)
            if server not in model.get("servers", {}):
                return
            await asyncio.sleep(0.3)
        raise HubError(f"{name}'s server {server!r} did not stop within {timeout} s:\n{self.log_tail()}")

    async def stop_everything(self, timeout: float = 60) -> None:
        users = await self.request("GET", "/users")
        jobs = [self.stop_server(u["name"], s) for u in users for s in u.get("servers", {})]
        await asyncio.gather(*jobs)

    async def stub_environ(self, name: str, server: str = "") -> dict:
        """The GPU environment of a stub-* user's server (stub_server.py answers with it), via the proxy."""
        url = f"http://127.0.0.1:{self.port}/user/{name}/{server + '/' if server else ''}env"
        return await self.request("GET", "", url=url)

    async def server_state(self, name: str, server: str = "") -> dict:
        return (await self.user(name))["servers"][server]["state"]

    async def kernel_environ(self, name: str, keys, server: str = "", timeout: float = 60) -> dict:
        """Start a kernel in the user's server, read os.environ[keys] (+ pid/ppid) from it, shut it down."""
        code = (
            "import os, json; print('ENV=' + json.dumps({**{k: os.environ.get(k) for k in %r}, "
            "'pid': os.getpid(), 'ppid': os.getppid()}))" % (list(keys),)
        )
        out = await self.kernel_run(name, code, server=server, timeout=timeout, until="ENV=")
        line = [ln for ln in out.splitlines() if ln.startswith("ENV=")]
        if not line:
            raise HubError(f"no output from the kernel of {name} within {timeout} s")
        return json.loads(line[-1][4:])

    async def kernel_run(self, name: str, code: str, server: str = "", timeout: float = 60, until: str = "",
                         shutdown: bool = True) -> str:
        """Run ``code`` in a new kernel of the user's server; return what it printed (then shut it down)."""
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        base = f"http://127.0.0.1:{self.port}/user/{name}/{server + '/' if server else ''}api"
        kernel = await self.request("POST", "", {"name": "python3"}, url=f"{base}/kernels", timeout=timeout)
        try:
            session = uuid.uuid4().hex
            msg_id = uuid.uuid4().hex
            msg = {
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": name,
                           "session": session, "date": "", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
            }
            ws_url = base.replace("http://", "ws://") + f"/kernels/{kernel['id']}/channels?session_id={session}"
            conn = await asyncio.wait_for(
                websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {self.token}"})),
                timeout,
            )
            try:
                await conn.write_message(json.dumps(msg))
                deadline = time.monotonic() + timeout
                out = ""
                while time.monotonic() < deadline:
                    raw = await asyncio.wait_for(conn.read_message(), max(0.1, deadline - time.monotonic()))
                    if raw is None:
                        raise HubError(f"kernel websocket of {name} closed early")
                    reply = json.loads(raw)
                    if reply.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = reply["header"]["msg_type"]
                    if kind == "stream":
                        out += reply["content"]["text"]
                    elif kind == "error":
                        raise HubError(f"kernel of {name} raised: {reply['content']}")
                    elif kind == "status" and reply["content"]["execution_state"] == "idle" and until in out:
                        break
                return out
            finally:
                conn.close()
        finally:
            if shutdown:
                await self.request("DELETE", "", url=f"{base}/kernels/{kernel['id']}", timeout=timeout, raw=True)


@contextmanager
def running_hub(root, *, extra_config: str = ""):
    """A started :class:`Hub` in ``root``; at the end every server is stopped, then killed."""
    h = Hub(root, extra_config=extra_config)
    h.start()
    try:
        yield h
    finally:
        try:
            if h.proc is not None and h.proc.poll() is None:
                asyncio.run(asyncio.wait_for(h.stop_everything(), 60))
        except Exception as e:  # the processes are killed below anyway
            print(f"stopping servers failed: {e}")
        h.stop()
        h.kill_all_servers()


class HubAPIError(HubError):
    def __init__(self, code, body, method, path):
        super().__init__(f"{method} {path} -> {code}: {body}")
        self.code = code
        self.body = body


def _message(body: bytes) -> str:
    try:
        return json.loads(body).get("message", "")
    except ValueError:
        return body.decode(errors="replace")


def load_culler_hook(path, *, gpu_idle_seconds):
    """The cull_arbiter_hook that jupyterhub-idle-culler would load from ``path``."""
    from traitlets.config.loader import PyFileConfigLoader

    old = os.environ.get("TOMOLAB_GPU_IDLE_TIMEOUT")
    os.environ["TOMOLAB_GPU_IDLE_TIMEOUT"] = gpu_idle_seconds
    try:
        cfg = PyFileConfigLoader(os.path.basename(path), os.path.dirname(path)).load_config()
    finally:
        if old is None:
            del os.environ["TOMOLAB_GPU_IDLE_TIMEOUT"]
        else:
            os.environ["TOMOLAB_GPU_IDLE_TIMEOUT"] = old
    return cfg.IdleCuller.cull_arbiter_hook


class BrowserSession:
    """A logged-in user going through the hub's HTML pages (cookies and the xsrf token kept by hand)."""

    def __init__(self, hub: Hub, name: str):
        self.hub = hub
        self.name = name
        self.cookies: dict[str, str] = {}

    async def fetch(self, path: str, *, form: dict | None = None):
        from urllib.parse import urlencode

        from tornado.httpclient import AsyncHTTPClient

        client = AsyncHTTPClient(force_instance=True)
        try:
            resp = await client.fetch(
                f"http://127.0.0.1:{self.hub.port}{path}",
                method="POST" if form is not None else "GET",
                body=urlencode({**form, "_xsrf": self.cookies.get("_xsrf", "")}) if form is not None else None,
                headers={"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())},
                follow_redirects=False,
                raise_error=False,
                request_timeout=60,
            )
        finally:
            client.close()
        for header in resp.headers.get_list("Set-Cookie"):
            key, _, rest = header.partition("=")
            self.cookies[key.strip()] = rest.split(";", 1)[0]
        return resp

    async def login(self) -> None:
        await self.fetch("/hub/login")
        resp = await self.fetch("/hub/login", form={"username": self.name, "password": "any"})
        if resp.code != 302:
            raise HubError(f"login of {self.name} failed: {resp.code} {resp.body[:500]!r}")


def kill_processes_mentioning(text: str) -> list[int]:
    """SIGKILL every live process whose command line contains ``text``; their pids.

    A hub's managed services (the idle culler) run in sessions of their own: a
    hub killed before its cleanup, or one whose cleanup did not finish, leaves
    them behind, outside the hub's process group.
    """
    needle = text.encode()
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle not in f.read():
                    continue
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
        except OSError:
            continue
    return killed
