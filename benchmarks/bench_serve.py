"""Benchmark: `distill serve` under a classroom grading load, against llama-cpp-python's own OpenAI server
(`python -m llama_cpp.server`, the named baseline) on the same GGUF file, the same requests and the same
thread count, each measured in its own process in the same run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_serve.py [--run runs/education-demo] [--quick]

The load: several classes whose questions interleave; 20 students per class answer their class's current
question (so many requests share a question and a reference: a shared prompt prefix); a class moves to a
new question every `--question-every` seconds. Answers come from the education template's synthesizer.
- open loop: every student submits on average every 5 s (Poisson arrivals), whatever the server does:
  P50/P99 latency from the scheduled arrival (client-side queueing included) and errors;
- saturation: 20 closed-loop clients, each sending its next request when the previous one is answered:
  decisions/s, P50/P99 and errors.
`distill serve` answers POST /v1/decide (label-word probabilities); llama_cpp.server answers the same rendered
prompt as POST /v1/completions with max_tokens 1 at temperature 0 (its cheapest way to a decision, no
logits over the whole prompt: logits_all off). The last line reads
`saturation_throughput_vs_llamacpp_server=<x> open_loop_p99_ms=<y> errors=<z>` (this server's figures).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("server did not start")


def classroom(n_classes: int, students: int, questions: int, seed: int) -> list[list[list[dict]]]:
    """[class][question][student] -> record (question, reference, answer)."""
    from verticals.education.answers import applicable, reference_text, student_answer
    from verticals.education.problems import make_problem

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_classes):
        per_q = []
        for _ in range(questions):
            p = make_problem(rng)
            allowed = sorted(applicable(p))
            per_q.append([{"question": p.question, "reference": reference_text(p),
                           "answer": student_answer(p, allowed[int(rng.integers(len(allowed)))], rng)[0]}
                          for _ in range(students)])
        out.append(per_q)
    return out


class Client:
    """One keep-alive HTTP connection per thread."""

    def __init__(self, port: int, kind: str, prompt_of):
        self.port, self.kind, self.prompt_of = port, kind, prompt_of
        self.local = threading.local()

    def send(self, record: dict) -> tuple[bool, str | None]:
        if self.kind == "distill":
            path, body = "/v1/decide", record
        else:
            path, body = "/v1/completions", {"prompt": self.prompt_of(record), "max_tokens": 1, "temperature": 0}
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = json.loads(resp.read())
                if resp.status != 200:
                    return False, None
                word = payload["decision"] if self.kind == "distill" else payload["choices"][0]["text"].strip()
                return True, word
            except (OSError, http.client.HTTPException):
                self.local.conn = None
                if attempt:
                    return False, None
        return False, None


def open_loop(client: Client, load, seconds: float, mean_gap: float, question_every: float, seed: int):
    rng = random.Random(seed)
    arrivals = []  # (time, class, student)
    for c in range(len(load)):
        for s in range(len(load[c][0])):
            t = rng.expovariate(1 / mean_gap)
            while t < seconds:
                arrivals.append((t, c, s))
                t += rng.expovariate(1 / mean_gap)
    arrivals.sort()
    lat, ok, words = [], [], []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def one(item):
        t, c, s = item
        q = min(int(t // question_every), len(load[c]) - 1)
        good, word = client.send(load[c][q][s])
        with lock:
            lat.append(time.perf_counter() - (t0 + t))
            ok.append(good)
            words.append(word)

    with ThreadPoolExecutor(64) as pool:
        for item in arrivals:
            delay = t0 + item[0] - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, item)
    return summary(lat, ok, time.perf_counter() - t0)


def saturation(client: Client, load, seconds: float, clients: int, question_every: float):
    lat, ok = [], []
    lock = threading.Lock()
    t0 = time.perf_counter()
    n_classes, students = len(load), len(load[0][0])

    def worker(i):
        c, s = i % n_classes, (i // n_classes) % students
        while (now := time.perf_counter() - t0) < seconds:
            q = min(int(now // question_every), len(load[c]) - 1)
            start = time.perf_counter()
            good, _ = client.send(load[c][q][s])
            with lock:
                lat.append(time.perf_counter() - start)
                ok.append(good)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return summary(lat, ok, time.perf_counter() - t0)


def summary(lat, ok, seconds):
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"requests": len(lat), "errors": int(len(ok) - sum(ok)), "per_s": sum(ok) / seconds,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/education-demo", help="a finished education run folder")
    ap.add_argument("--artifact", default=None, help="default: the smallest student GGUF")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--students", type=int, default=20)
    ap.add_argument("--mean-gap", type=float, default=5.0, help="seconds between a student's submissions")
    ap.add_argument("--question-every", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=90.0, help="each regime's duration")
    ap.add_argument("--quick", action="store_true", help="30 s per regime")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seconds = 30.0 if args.quick else args.seconds

    from sdk.scoring import load_run

    run = load_run(args.run)
    name = args.artifact or run.default_artifact
    fmt, spec = run._spec(name, 8)
    gguf = spec["model"]
    load = classroom(args.classes, args.students, int(seconds // args.question_every) + 2, args.seed)
    prompts = {}

    def prompt_of(record):
        key = (record["question"], record["answer"])
        if key not in prompts:
            prompts[key] = run.prompts(run.check([record]))[0]
        return prompts[key]

    for c in load:  # render every prompt before timing
        for q in c:
            for r in q:
                prompt_of(r)
    print(f"model {name}: {gguf} ({Path(gguf).stat().st_size / 1e6:.1f} MB); {args.threads} server threads; "
          f"{args.classes} classes x {args.students} students; {seconds:.0f} s per regime", flush=True)
    results = {}
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    servers = {
        "distill serve": (["-m", "sdk.cli", "serve", args.run, "--artifact", name, "--threads", str(args.threads),
                           "--sequences", "64", "--max-queue", "256"], "/health", "distill"),
        "llama_cpp.server": (["-m", "llama_cpp.server", "--model", gguf, "--n_threads", str(args.threads),
                              "--n_threads_batch", str(args.threads), "--n_ctx", "2048", "--logits_all", "False",
                              "--verbose", "False"], "/v1/models", "llamacpp"),
    }
    for label, (argv, ready, kind) in servers.items():
        port = free_port()
        proc = subprocess.Popen([sys.executable, *argv, "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(port, ready, proc)
            client = Client(port, kind, prompt_of)
            for r in load[0][0][:3]:  # warm-up
                client.send(r)
            results[label] = {
                "open": open_loop(client, load, seconds, args.mean_gap, args.question_every, args.seed),
                "sat": saturation(client, load, seconds, args.students, args.question_every)}
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        o, s = results[label]["open"], results[label]["sat"]
        print(f"{label:18s} open loop: {o['requests']} requests, P50 {o['p50_ms']:.0f} ms, P99 {o['p99_ms']:.0f} ms, "
              f"{o['errors']} errors | saturation: {s['per_s']:.1f} decisions/s, P50 {s['p50_ms']:.0f} ms, "
              f"P99 {s['p99_ms']:.0f} ms, {s['errors']} errors", flush=True)
    ours, base = results["distill serve"], results["llama_cpp.server"]
    ratio = ours["sat"]["per_s"] / base["sat"]["per_s"] if base["sat"]["per_s"] else float("nan")
    errors = ours["open"]["errors"] + ours["sat"]["errors"]
    print(f"saturation_throughput_vs_llamacpp_server={ratio:.2f} open_loop_p99_ms={ours['open']['p99_ms']:.0f} "
          f"errors={errors}")


if __name__ == "__main__":
    main()
