#!/usr/bin/env python3
"""Bring up a small pool on this machine: a head and N workers, each worker supervising its
backend through ``--subprocess``. Prints the base URL and how to call it; Ctrl-C stops every
process it started.

By default the backends are opentela's built-in *test* upstream (instant fake tokens), so the
demo runs anywhere in seconds. Pass ``--backend-cmd`` to run a real server instead; ``{port}``
and ``{model}`` are filled in, e.g.::

    --backend-cmd "python -m llama_cpp.server --model X.gguf --model_alias {model} --port {port}"
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FAKE = f"{sys.executable} -m opentela.testing.fake_upstream --host 127.0.0.1 --port {{port}} --model {{model}}"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="demo-model")
    ap.add_argument("--backend-cmd", default=FAKE)
    ap.add_argument("--http-port", type=int, default=8092)
    ap.add_argument("--ready-timeout", type=float, default=300)
    args = ap.parse_args()

    node = [sys.executable, "-m", "opentela.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="otela-demo-"))
    procs: list[subprocess.Popen] = []

    def spawn(name: str, argv: list[str]) -> None:
        log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        procs.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        )

    try:
        head_home = tmp / "head"
        subprocess.run([*node, "init", "--home", str(head_home)], check=True, capture_output=True)
        head_id = subprocess.run(
            [*node, "peer-id", "--home", str(head_home)], check=True, capture_output=True, text=True
        ).stdout.strip()
        p2p = free_port(args.host)
        spawn(
            "head",
            [
                *node,
                "start",
                "--home",
                str(head_home),
                "--http-host",
                args.host,
                "--http-port",
                str(args.http_port),
                "--p2p-host",
                args.host,
                "--p2p-port",
                str(p2p),
                "--log-format",
                "json",
            ],
        )
        boot = f"/ip4/{args.host}/tcp/{p2p}/p2p/{head_id}"
        for i in range(args.workers):
            port = free_port("127.0.0.1")
            cmd = args.backend_cmd.format(port=port, model=args.model)
            spawn(
                f"worker{i + 1}",
                [
                    *node,
                    "start",
                    "--home",
                    str(tmp / f"w{i + 1}"),
                    "--http-host",
                    args.host,
                    "--http-port",
                    str(free_port(args.host)),
                    "--p2p-host",
                    args.host,
                    "--p2p-port",
                    str(free_port(args.host)),
                    "--bootstrap",
                    boot,
                    "--service.name",
                    "llm",
                    "--service.port",
                    str(port),
                    "--subprocess",
                    cmd,
                    "--log-format",
                    "json",
                ],
            )
        base = f"http://{args.host}:{args.http_port}"
        print(f"starting a head and {args.workers} worker(s); logs in {tmp}", flush=True)
        deadline = time.monotonic() + args.ready_timeout
        replicas = 0
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a process exited early; see logs in {tmp}")
            try:
                data = get(f"{base}/v1/models")["data"]
                replicas = next((m["replicas"] for m in data if m["id"] == args.model), 0)
            except OSError:
                replicas = 0
            print(f"\r  backends ready: {replicas}/{args.workers}", end="", flush=True)
            if replicas >= args.workers:
                break
            time.sleep(0.5)
        print()
        if replicas < args.workers:
            raise SystemExit(f"backends not ready after {args.ready_timeout}s; see logs in {tmp}")
        print(
            f"""
The pool is up. Base URL: {base}/v1

  curl {base}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{args.model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python -c "from openai import OpenAI; c = OpenAI(base_url='{base}/v1', api_key='none'); \\
print(c.chat.completions.create(model='{args.model}', messages=[{{'role': 'user', 'content': 'Hello!'}}]).choices[0].message.content)"

  opentela-node table --url {base}

Ctrl-C stops everything.""",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print(f"a process exited; see logs in {tmp}")
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping...", flush=True)
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        print("stopped.")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
