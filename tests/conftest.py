"""Session fixtures: real espeak-ng speech and a real tiny Moonshine v2 checkpoint, built once."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One torch thread, here and in every CLI child: the tiny models gain nothing from a second one,
# and tests that run processes side by side would otherwise oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> dict[str, Path]:
    """train / domain / heldout manifests of espeak-ng speech (16 kHz mono WAV)."""
    from orchestrator.data.synth import make_test_set

    return make_test_set(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from orchestrator.training.modeling import build_tiny_random

    return build_tiny_random(tmp_path_factory.mktemp("ckpt") / "tiny_random")


@pytest.fixture(scope="session")
def streaming_tiny_checkpoint(tmp_path_factory) -> Path:
    """The hub-shaped UsefulSensors/moonshine-streaming-tiny (real architecture and vocabulary
    size, random weights; 44M parameters, 176 MB), built once by its recipe."""
    from orchestrator.training.modeling import build

    return build("moonshine_streaming_tiny", tmp_path_factory.mktemp("hub") / "moonshine-streaming-tiny")


@pytest.fixture
def run_overrides(speech, tiny_checkpoint, tmp_path) -> list[str]:
    """Overrides for a few-step real run on tiny_random, writing only under tmp_path."""
    return ["+exp=smoke_tiny_random", f"model.id={tiny_checkpoint}",
            f"data.train_manifest={speech['train']}", f"eval.domain_manifest={speech['domain']}",
            f"eval.heldout_manifest={speech['heldout']}", f"registry.url=sqlite:///{tmp_path / 'registry.db'}",
            f"output_dir={tmp_path / 'outputs'}", "optim.steps=4", "eval.interval=2", "model.tokens_per_second=5"]


@pytest.fixture
def make_spec(run_overrides):
    """`make_spec(*extra)`: the RunSpec of run_overrides plus `extra` overrides, composed from conf/."""
    from orchestrator.config.spec import spec_from_overrides

    return lambda *extra: spec_from_overrides([*run_overrides, *extra])


def cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m orchestrator ARGS` as a user would; returns the finished process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# --- a throwaway PostgreSQL server, for the registry tests parametrized over both backends ---

class PostgresServer:
    """A real PostgreSQL cluster in a temp folder, on 127.0.0.1 at a free port (trust auth)."""

    def __init__(self, bindir: Path, base: Path, port: int, as_user: list[str]):
        self.bindir, self.base, self.port, self.as_user = bindir, base, port, as_user

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run([*self.as_user, str(self.bindir / tool), *args], capture_output=True,
                              text=True, timeout=120, cwd=self.base)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        name = f"registry_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Start a PostgreSQL cluster for the session (initdb + pg_ctl of Debian's postgresql) and
    tear it down after. Missing binaries fail the test: scripts/setup.sh installs them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: "
                    "run scripts/setup.sh (it installs Debian's postgresql package)", pytrace=False)
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="orchestrator-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the `postgres` system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("no `postgres` system user to run the test server as: run scripts/setup.sh", pytrace=False)
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    server = PostgresServer(bindir, base, port, as_user)
    data = base / "data"
    server._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale")
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    def interrupted(signum, frame):  # `timeout` sends SIGTERM: unwind, so the server is stopped below
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        server._run("pg_ctl", "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "-o", options, "start")
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


BACKENDS = ("sqlite", "postgresql")


def registry_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh registry URL on `backend`: a SQLite file under tmp_path or a new PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres").new_database()

