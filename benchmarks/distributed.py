"""The Ray executor (`emaki.jobs.ray_executor`) against one local worker, and the head's ceiling.

1. Throughput on the demo model: `emaki batch`'s loop (`run_batch`, the head writing every PNG)
   with 1 single-thread engine in this process and with 2 single-thread Ray actors, in the same
   run, in alternating rounds of the same kind of jobs (warmed up: each engine has loaded the
   model first). Target: >= 1.6x. Also each one's CPU seconds per image: on a machine that other
   work keeps busy, the ratio the two cores would give when free.
2. The dispatcher with simulated workers: Ray actors that sleep `--sleep` s instead of
   generating and return a small PNG, `--sim-workers` of them (64: 20 jobs/s each at 0.05 s).
   Reports jobs/s through the head and the head's CPU time per job (this process's CPU time over
   the run: the routing, the policy check, Ray's submit/wait/get). Targets: <= 5 ms/job, >= 500
   jobs/s. Also the dispatcher's own bookkeeping on an instant fake cluster (no Ray).
3. What else the head does per job at scale: writing a PNG atomically, and the server's SQLite
   store cycle (submit, claim, finish with one gallery row), as jobs/s of a single writer.
4. `--faults N`: N repetitions of a batch of `--fault-jobs` (60) on 2 actors with one killed
   mid-batch: images lost and made twice (target: 0 and 0). `--fault-kill process`: its process
   SIGKILLed instead (Ray restarts it: it should be back in the pool by the end).
5. `--server-faults N`: the same through the server (`emaki serve --executor ray`, in this
   process): `POST /api/batch` of `--fault-jobs` items, one actor's process SIGKILLed mid-job (Ray
   restarts it); counts jobs lost, images twice (rows or files), retried jobs, temp files left.

    python benchmarks/distributed.py [--jobs 24] [--rounds 4] [--size 96] [--steps 6] [--sim-workers 64]
                                     [--sim-jobs 3000] [--sleep 0.05] [--faults 5 [--fault-kill process]]
                                     [--server-faults 5 --fault-steps 6]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from emaki.batch.run import LocalBatchExecutor, run_batch
from emaki.batch.spec import BatchItem, keyed
from emaki.jobs.ray_executor import Dispatcher, EngineActor, RayCluster, RayExecutor
from emaki.jobs.rendered import EngineSlot, JobOutcome, JobRequest, RenderedImage
from emaki.params import GenerationParams
from emaki.workspace import workspace_from_environment


def items(count: int, size: int, steps: int, tag: str) -> list[BatchItem]:
    made = []
    for i in range(count):
        key, params = keyed(GenerationParams.create(prompt=f"1girl, {tag} {i}", width=size, height=size, steps=steps))
        made.append(BatchItem(i + 1, key, params))
    return made


class Recording:
    """Passes an executor's outcomes on, keeping the workers' CPU seconds per job."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.cpu: list[float] = []

    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        for outcome in self.executor.outcomes(requests):
            self.cpu.append(outcome.facts.get("cpu_seconds", 0.0))
            yield outcome

    def close(self) -> None:
        pass


def timed_run(batch: list[BatchItem], executor: Any, folder: Path) -> tuple[float, list[float]]:
    """(seconds, the workers' CPU seconds of each image)."""
    recording = Recording(executor)
    started = time.perf_counter()
    report = run_batch(batch, folder, recording)
    seconds = time.perf_counter() - started
    assert report.counts["done"] == len(batch), report.counts
    return seconds, recording.cpu


def throughput(jobs: int, size: int, steps: int, rounds: int, work: Path) -> None:
    """Both set up and warmed first, then measured in alternating rounds, so that the load of
    whatever else runs on the machine falls on both alike."""
    import ray

    warm = items(1, size, steps, "warm")[0]
    local = LocalBatchExecutor(EngineSlot.on_workspace(workspace_from_environment(os.environ), threads=1,
                                                       precision="fp32"))
    local.slot.render("warm", warm.params.model_dump())
    executor = RayExecutor(RayCluster(EngineActor, (1, "fp32"), threads=1), workers=2)
    ray.get([actor.render.remote("warm", warm.params.model_dump()) for actor in executor.actors])
    spent = {"local": 0.0, "ray": 0.0}
    cpu: dict[str, list[float]] = {"local": [], "ray": []}
    per_round = max(1, jobs // rounds)
    for index in range(rounds):
        batch = items(per_round, size, steps, f"round {index}")
        for name, runner in (("local", local), ("ray", executor)):
            seconds, used = timed_run(batch, runner, work / f"{name}{index}")
            spent[name] += seconds
            cpu[name] += used
    executor.close()
    count = per_round * rounds
    local_rate, ray_rate = count / spent["local"], count / spent["ray"]
    local_cpu, ray_cpu = (sum(cpu[n]) / len(cpu[n]) for n in ("local", "ray"))
    print(f"throughput, demo model {size}x{size}, {steps} steps, {count} jobs each in {rounds} alternating rounds "
          f"(head writes every PNG), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores:")
    print(f"  1 local single-thread engine : {local_rate:.2f} images/s ({local_cpu:.3f} CPU s/image)")
    print(f"  2 single-thread Ray actors   : {ray_rate:.2f} images/s ({ray_cpu:.3f} CPU s/image per actor)")
    print(f"  ratio                        : {ray_rate / local_rate:.2f}x (target >= 1.6x)")
    print(f"  ratio if each actor had a core to itself (2 x local CPU / actor CPU per image): "
          f"{2 * local_cpu / ray_cpu:.2f}x")


def tiny_png() -> RenderedImage:
    from PIL import Image

    from emaki.engine.output import png_info

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buffer, format="PNG", pnginfo=png_info("simulated"))
    return RenderedImage(buffer.getvalue(), "simulated", 1, 1, 64, 64)


class SleepingActor:
    """A simulated worker: takes `seconds` per job, returns one small PNG."""

    def __init__(self, seconds: float, image: RenderedImage) -> None:
        self.seconds = seconds
        self.image = image

    def render(self, key: str, fields: dict[str, Any]) -> JobOutcome:
        time.sleep(self.seconds)
        return JobOutcome(key, images=[self.image], facts={"seconds": self.seconds})

    def ping(self) -> str:
        return "up"


def simulated(workers: int, jobs: int, seconds: float) -> None:
    import ray

    requests = [JobRequest(f"k{i}", GenerationParams.create(prompt=f"1girl, smile {i}", seed=i)) for i in range(jobs)]
    # num_cpus=0: the simulated workers sleep; 64 of them fit on this 2-core machine.
    cluster = RayCluster(SleepingActor, (seconds, tiny_png()), threads=0)
    started = time.perf_counter()
    executor = RayExecutor(cluster, workers)
    ray.get([actor.ping.remote() for actor in executor.actors])
    print(f"simulated: {workers} sleeping actors up in {time.perf_counter() - started:.1f} s")
    list(executor.outcomes(requests[:workers * 2]))  # warm: every actor has answered once
    cpu, wall = time.process_time(), time.perf_counter()
    done = Counter(o.ok for o in executor.outcomes(requests))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    executor.close()
    assert done[True] == jobs, done
    capacity = workers / seconds
    print(f"  {jobs} jobs of {seconds * 1000:.0f} ms on {workers} actors (capacity {capacity:.0f} jobs/s):")
    print(f"  through the head: {jobs / wall:.0f} jobs/s (target >= 500), {wall / jobs * 1000:.2f} ms/job of wall")
    print(f"  head CPU per job: {cpu / jobs * 1000:.2f} ms (target <= 5 ms; routing, policy, Ray submit/wait/get)")


class InstantCluster:
    """No Ray: every call is done when sent; for the dispatcher's own cost."""

    def __init__(self) -> None:
        self.calls: dict[int, JobRequest | None] = {}
        self.ready: list[int] = []

    def start(self) -> int:
        return 0

    def submit(self, actor: int, request: JobRequest | None) -> int:
        ref = len(self.calls)
        self.calls[ref] = request
        self.ready.append(ref)
        return ref

    def ping(self, actor: int) -> int:
        return self.submit(actor, None)

    def wait(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        ready, self.ready = self.ready, []
        return ready

    def get(self, ref: int) -> Any:
        request = self.calls.pop(ref)
        return JobOutcome(request.key) if request is not None else "up"

    def stop(self, actor: int) -> None:
        pass


def dispatcher_alone(workers: int, jobs: int) -> None:
    requests = [JobRequest(f"k{i}", GenerationParams.create(prompt=f"1girl, smile {i}", seed=i, model=f"m{i % 3}"))
                for i in range(jobs)]
    dispatcher = Dispatcher(InstantCluster(), workers)
    started = time.process_time()
    count = sum(1 for _ in dispatcher.outcomes(requests))
    spent = time.process_time() - started
    print(f"dispatcher alone (no Ray, {workers} slots, policy check included): "
          f"{spent / count * 1e6:.0f} us/job")


def head_writes(count: int) -> None:
    from emaki.files import atomic_write
    from emaki.jobs.store import ImageRecord, JobStore

    image = tiny_png()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        for i in range(count):
            with atomic_write(Path(folder) / f"{i}.png") as tmp:
                tmp.write_bytes(image.png)
        per_png = (time.perf_counter() - started) / count
        store = JobStore(Path(folder) / "jobs.sqlite3")
        started = time.perf_counter()
        for i in range(count):
            store.submit({"prompt": f"1girl {i}"})
            job = store.claim_next(timeout=0)
            assert job is not None
            record = ImageRecord(Path(folder) / f"{i}.png", i, "1girl", "", "demo", 64, 64, "simulated")
            store.finish(job.id, "done", result={"seeds": [i]}, images=[record])
        per_job = (time.perf_counter() - started) / count
        store.close()
    print(f"head writes: a PNG atomically {per_png * 1000:.2f} ms ({1 / per_png:.0f}/s); "
          f"SQLite store submit+claim+finish {per_job * 1000:.2f} ms/job ({1 / per_job:.0f} jobs/s, one writer)")


class KillingOne:
    """Ends the busiest actor after `after` outcomes: `ray.kill` (gone for good), or with
    `process` its process SIGKILLed (Ray restarts it; its pid asked before the batch starts)."""

    def __init__(self, executor: RayExecutor, after: int, process: bool = False) -> None:
        import ray

        self.executor, self.after = executor, after
        self.pids = ({slot.index: ray.get(slot.actor.__ray_call__.remote(lambda actor: os.getpid()))
                      for slot in executor.dispatcher.slots} if process else None)

    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        import ray

        for count, outcome in enumerate(self.executor.outcomes(requests), start=1):
            if count == self.after:
                victim = max(self.executor.dispatcher.slots, key=lambda slot: slot.in_flight)
                if self.pids is None:
                    ray.kill(victim.actor)
                else:
                    os.kill(self.pids[victim.index], signal.SIGKILL)
            yield outcome

    def close(self) -> None:
        self.executor.close()


def faults(repetitions: int, jobs: int, work: Path, process: bool) -> None:
    lost = duplicates = retried = alive = 0
    for repetition in range(repetitions):
        batch = items(jobs, 64, 2, f"fault{repetition}")
        executor = RayExecutor(RayCluster(EngineActor, (1, "fp32"), threads=1), workers=2)
        folder = work / f"faults{repetition}"
        report = run_batch(batch, folder, KillingOne(executor, jobs // 3, process))
        alive += sum(slot.alive for slot in executor.dispatcher.slots)
        executor.close()
        names = Counter(p.name for p in folder.glob("*.png"))
        expected = {name for item in batch for name in (f"{item.key}.png",)}
        lost += len(expected - set(names))
        duplicates += sum(n - 1 for n in names.values()) + len(set(names) - expected)
        retried += sum(row.attempts == 2 for row in report.rows)
        assert report.counts["done"] == jobs, report.counts
    how = "one actor's process SIGKILLed" if process else "one actor ended (ray.kill)"
    print(f"faults: {repetitions} x {jobs} jobs on 2 actors, {how} mid-batch each time: "
          f"{lost} lost, {duplicates} duplicates, {retried} jobs retried, {alive}/{2 * repetitions} actors "
          f"in the pool at the ends")


@dataclass
class ServedRun:
    """What one `--server-faults` repetition found."""

    done: int = 0
    lost: int = 0  # jobs not done, or done without an image
    duplicates: int = 0  # gallery rows past one per job, and PNG files past one per row
    retried: int = 0  # jobs whose note says a worker died under them
    leftovers: int = 0  # hidden (temp) files or folders left in the outputs
    killed_mid_job: bool = False  # the victim reported a render under way when it was killed
    alive: int = 0  # actors in the pool at the end (the killed one back once Ray restarted it)


def batch_counts(client: Any, name: str) -> dict[str, Any]:
    response = client.get(f"/api/batch/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_batch(client: Any, name: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        counts = batch_counts(client, name)
        if until(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {name}: still {counts} after {timeout:.0f} s")
        time.sleep(0.05)


def kill_a_rendering_actor(executor: Any) -> bool:
    """SIGKILL the process of an actor that is rendering (as a crash or the OOM killer would: Ray
    restarts it); whether it was mid-job (not at its last step) when killed."""
    import ray

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for slot in executor.pool.slots:
            running = ray.get(slot.actor.running.remote(), timeout=30)
            if running and running.get("step", 0) < running.get("steps", 1) - 1:
                pid = ray.get(slot.actor.__ray_call__.remote(lambda actor: os.getpid()), timeout=30)
                os.kill(pid, signal.SIGKILL)
                return True
        time.sleep(0.01)
    raise AssertionError("no actor was caught mid-job in 60 s")


def served_run(client: Any, name: str, jobs: int, steps: int) -> ServedRun:
    """Post a batch of `jobs`, kill one actor's process a third of the way in, wait for the end."""
    items = [{"prompt": f"1girl, {name} item {i}", "seed": i, "width": 64, "height": 64, "steps": steps,
              "sampler_name": "Euler"} for i in range(jobs)]
    posted = client.post("/api/batch", json={"name": name, "items": items})
    assert posted.status_code == 202 and posted.json()["queued"] == jobs, posted.text
    wait_batch(client, name, lambda counts: counts["done"] >= jobs // 3, 600)
    service = client.app.state.service
    found = ServedRun(killed_mid_job=kill_a_rendering_actor(service.worker.executor))
    wait_batch(client, name, lambda counts: counts["queued"] + counts["running"] == 0, 600)

    outputs = service.engine.workspace.outputs
    rows: Counter[str] = Counter()
    for job_id in posted.json()["jobs"]:
        job = client.get(f"/api/jobs/{job_id}").json()
        found.done += job["status"] == "done"
        found.lost += job["status"] != "done" or not job["images"]
        found.retried += (job["note"] or "").startswith("retried:")
        rows[job_id] = len(job["images"])
    paths = [Path(row["path"]) for job_id in rows for row in service.store.images_of(job_id)]
    files = [path for path in outputs.rglob("*.png") if not path.name.startswith(".")]
    found.duplicates = sum(max(0, n - 1) for n in rows.values()) + len(paths) - len(set(paths))
    found.duplicates += len(set(files) - set(paths))
    found.lost += len(set(paths) - set(files))
    found.leftovers = sum(1 for _ in outputs.rglob(".*"))
    slots = service.worker.executor.pool.slots
    deadline = time.monotonic() + 120
    while any(slot.in_flight for slot in slots) and time.monotonic() < deadline:  # its restart, awaited
        time.sleep(0.1)
    found.alive = sum(slot.alive for slot in slots)
    return found


def server_faults(repetitions: int, jobs: int, steps: int, work: Path) -> None:
    """`emaki serve --executor ray` (in this process, on the Ray instance `main` started, 2 actors):
    a batch of `jobs` through `POST /api/batch`, one actor's process killed mid-job each time."""
    from fastapi.testclient import TestClient

    from emaki.server import ServerSettings, create_app

    total = ServedRun()
    for repetition in range(repetitions):
        workspace = workspace_from_environment({"EMAKI_HOME": str(work / f"serve-faults{repetition}")})
        settings = ServerSettings(workspace=workspace, precision="fp32", threads=1, executor="ray", workers=2)
        started = time.perf_counter()
        with TestClient(create_app(settings)) as client:
            found = served_run(client, f"faults{repetition}", jobs, steps)
        print(f"server faults {repetition + 1}/{repetitions}: {found.done}/{jobs} done, {found.lost} lost, "
              f"{found.duplicates} duplicates, {found.retried} retried, {found.leftovers} temp files left, "
              f"killed mid-job: {found.killed_mid_job}, actors alive after: {found.alive}/2, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        for name in ("done", "lost", "duplicates", "retried", "leftovers"):
            setattr(total, name, getattr(total, name) + getattr(found, name))
    print(f"server faults: {repetitions} x {jobs} jobs through POST /api/batch on 2 actors, one actor process "
          f"killed mid-job each time: {total.lost} lost, {total.duplicates} duplicates, {total.retried} retried "
          f"(target: 0 lost, 0 duplicates, 1 retried each time), {total.leftovers} temp files left")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sim-workers", type=int, default=64)
    parser.add_argument("--sim-jobs", type=int, default=3000)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--faults", type=int, default=0)
    parser.add_argument("--fault-jobs", type=int, default=60)
    parser.add_argument("--fault-kill", choices=["actor", "process"], default="actor",
                        help="--faults: ray.kill the actor, or SIGKILL its process (Ray restarts it)")
    parser.add_argument("--server-faults", type=int, default=0)
    parser.add_argument("--fault-steps", type=int, default=6, help="steps of each --server-faults job")
    parser.add_argument("--skip", action="append", default=[], choices=["throughput", "simulated", "writes"])
    args = parser.parse_args(argv)

    import ray

    with tempfile.TemporaryDirectory() as work:
        home = Path(work) / "home"
        os.environ["EMAKI_HOME"] = str(home)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"EMAKI_HOME": str(home), "OMP_NUM_THREADS": "1"}})
        try:
            dispatcher_alone(64, 20_000)
            if "writes" not in args.skip:
                head_writes(500)
            if "throughput" not in args.skip:
                throughput(args.jobs, args.size, args.steps, args.rounds, Path(work))
            if "simulated" not in args.skip:
                simulated(args.sim_workers, args.sim_jobs, args.sleep)
            if args.faults:
                faults(args.faults, args.fault_jobs, Path(work), args.fault_kill == "process")
            if args.server_faults:
                server_faults(args.server_faults, args.fault_jobs, args.fault_steps, Path(work))
        finally:
            ray.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
