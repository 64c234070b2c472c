"""`emaki serve` overhead: a generation through the HTTP APIs vs the same generation in-process,
and how fast `/sdapi/v1/progress` answers while a job runs.

Each round runs the same job (demo model, 20 steps Euler a, 64x64, batch 1, fixed seed) three
ways, interleaved so that machine load hits all three alike: `Engine.generate` in this
process, POST /sdapi/v1/txt2img (images returned in the reply), and POST /api/jobs followed by
its event stream until `done` (image written to the gallery). The server is a separate
`emaki serve` process on loopback. Medians are reported; overhead = server / in-process - 1.

    python benchmarks/server.py [--rounds 20] [--steps 20] [--progress-calls 200] [--settle 0.5]

Before each timed call the benchmark sleeps `--settle` seconds: torch's OpenMP threads keep
spinning for a while after a call, and on two cores the spinning threads of one process would
otherwise slow the next measurement in the other (measured: the HTTP run doubled to 0.57 s).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "emaki", "serve", "--port", str(port)],
                               env=os.environ | {"EMAKI_HOME": str(home)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


def native_job(client: httpx.Client, payload: dict) -> None:
    job = client.post("/api/jobs", json=payload).json()
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: ") and line[7:] in ("done", "failed", "cancelled", "interrupted"):
                assert line[7:] == "done", line
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--progress-calls", type=int, default=200)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of quiet before each timed call")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="emaki-bench-server-"))
    from emaki.engine import Engine
    from emaki.params import GenerationParams
    from emaki.workspace import Workspace

    generate = Engine(Workspace(home / "inprocess")).generate

    payload = {"prompt": "1girl, pink hair, green eyes, smile", "negative_prompt": "hat", "seed": 1234,
               "steps": args.steps, "width": 64, "height": 64, "sampler_name": "Euler a", "cfg_scale": 7}
    params = GenerationParams.create(**payload)
    port = free_port()
    server = start_server(home / "server", port)
    times: dict[str, list[float]] = {"in-process": [], "sdapi txt2img": [], "native job + events": []}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            generate(params, save=False)  # warm-up: model load, first-call costs
            client.post("/sdapi/v1/txt2img", json=payload).raise_for_status()
            native_job(client, payload)
            runs = {"in-process": lambda: generate(params, save=False),
                    "sdapi txt2img": lambda: client.post("/sdapi/v1/txt2img", json=payload).raise_for_status(),
                    "native job + events": lambda: native_job(client, payload)}
            for _ in range(args.rounds):
                for name, run in runs.items():
                    time.sleep(args.settle)
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)

            latencies = []
            long_job = client.post("/api/jobs", json=payload | {"steps": 100_000 // 100, "save": False}).json()
            while client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] == 0:
                time.sleep(0.01)
            for _ in range(args.progress_calls):
                start = time.perf_counter()
                body = client.get("/sdapi/v1/progress").json()
                latencies.append(time.perf_counter() - start)
                assert body["state"]["job"] == long_job["id"]
            client.post(f"/api/jobs/{long_job['id']}/cancel")
            with_preview = [b for b in [client.get("/sdapi/v1/progress").json()] if b["current_image"]]
    finally:
        server.terminate()
        server.wait(30)

    base = statistics.median(times["in-process"])
    rows = {}
    print(f"{args.rounds} rounds, demo model, {args.steps} steps Euler a 64x64, 2 CPU cores")
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {"median_s": round(median, 4), "overhead": round(median / base - 1, 4)}
        print(f"  {name:22s} median {median * 1000:7.1f} ms   overhead vs in-process {100 * (median / base - 1):+6.1f} %")
    latencies.sort()
    p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
    print(f"  /sdapi/v1/progress during a job ({len(latencies)} calls, with preview image): "
          f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    print(json.dumps({"jobs": rows, "progress_ms": {"p50": p50 * 1000, "p95": p95 * 1000,
                                                    "max": latencies[-1] * 1000}, "preview_seen": bool(with_preview)}))


if __name__ == "__main__":
    main()
