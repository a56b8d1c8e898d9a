#!/usr/bin/env python3
"""A space of N real nodes (default 20) and a real signaling server on 127.0.0.1.

Measures, with the processes of a release (or debug) build:
  - delivery: time from `POST /channels/{id}/messages` at the owner until the message's
    `message` event has reached every other member (each node's `discordopus events` stream,
    read as it arrives), for the first message (it shares the Megolm key over Olm, opening
    sessions) and for K steady messages one second apart;
  - bytes: what the owner's socket to the server sends per message (all the copies of its
    fan-out, and anything else it sent in that window: acks, receipts; `ss -ti` bytes_sent
    on that TCP connection), and frames the server relayed live (/metrics
    `dopus_relayed_frames_total`, every sender: the delivered receipts coming back included);
  - a key rotation after a kick: the owner kicks the last member, then sends: the same two
    figures for that message (it carries a new session key to every remaining device).

Prints a Markdown table and the machine's facts (nproc, CPU, load average before and after);
record them in docs/benchmarks.md. Run it on a quiet machine, once:

    cargo build --release -p dopus-node -p dopus-server && bench/spaces/nodes.py
    BIN=target/debug bench/spaces/nodes.py --members 20    # with a debug build

Everything lives under a temporary directory, removed at the end (every process killed).
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(what, timeout, check, every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s: {what}")
        time.sleep(every)


class Node:
    def __init__(self, name, directory):
        self.name = name
        self.dir = directory
        self.url = None
        self.token = None
        self.user_id = None
        self.proc = None
        self.events = None
        self.seen = {}  # message body -> monotonic time its event arrived
        self.lock = threading.Lock()

    def api(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
        return json.loads(text) if text else None

    def read_events(self):
        for line in self.events.stdout:
            at = time.monotonic()
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("type") == "message":
                body = e.get("message", {}).get("body")
                if isinstance(body, str):
                    with self.lock:
                        self.seen.setdefault(body, at)

    def saw(self, body):
        with self.lock:
            return self.seen.get(body)


def sender_bytes(pid, server_port):
    """bytes_sent on `pid`'s TCP connections to the server (its WebSocket)."""
    out = subprocess.run(
        ["ss", "-tinpH", "state", "established", f"( dport = :{server_port} )"],
        capture_output=True, text=True, check=True,
    ).stdout
    total = 0
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if f"pid={pid}," in line and i + 1 < len(lines):
            m = re.search(r"bytes_sent:(\d+)", lines[i + 1])
            if m:
                total += int(m.group(1))
    return total


def relayed_total(metrics_url):
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^dopus_relayed_frames_total\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20, help="steady messages (one a second)")
    args = ap.parse_args()
    n = args.members
    if not 3 <= n <= 100:
        raise SystemExit("--members must be 3 to 100")
    bin_dir = os.path.join(ROOT, os.environ.get("BIN", "target/release"))
    node_bin = os.path.join(bin_dir, "discordopus")
    server_bin = os.path.join(bin_dir, "discordopus-server")
    for b in (node_bin, server_bin):
        if not os.path.exists(b):
            raise SystemExit(f"missing {b}: cargo build --release -p dopus-node -p dopus-server (or BIN=target/debug)")

    env = dict(os.environ, DISCORDOPUS_INSECURE_FAST_KDF="1", DISCORDOPUS_PASSPHRASE="pw", DISCORDOPUS_LOG="warn")
    env.pop("DISCORDOPUS_SERVER", None)
    env.pop("DISCORDOPUS_DATA_DIR", None)
    work = tempfile.mkdtemp(prefix="dopus-bench-spaces.")
    procs = []
    load_before = open("/proc/loadavg").read().split()[:3]
    try:
        port = free_port()
        server = subprocess.Popen(
            [server_bin, "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "server"),
             "--stun-listen", "off", "--log", "warn"],
            stdout=open(os.path.join(work, "server.log"), "w"), stderr=subprocess.STDOUT, env=env,
        )
        procs.append(server)
        server_url = f"ws://127.0.0.1:{port}"
        metrics_url = f"http://127.0.0.1:{port}/metrics"

        nodes = [Node(f"m{i:02}", os.path.join(work, f"m{i:02}")) for i in range(n)]
        t_start = time.monotonic()
        for nd in nodes:
            out = subprocess.run([node_bin, "--data-dir", nd.dir, "--json", "id", "create", "--name", nd.name],
                                 capture_output=True, text=True, env=env, check=True)
            nd.user_id = json.loads(out.stdout)["user_id"]
            nd.proc = subprocess.Popen(
                [node_bin, "--data-dir", nd.dir, "--json", "run", "--server", server_url, "--api", "127.0.0.1:0"],
                stdout=open(os.path.join(work, f"{nd.name}.log"), "w"), stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env,
            )
            procs.append(nd.proc)
        for nd in nodes:
            api_json = os.path.join(nd.dir, "api.json")
            wait_until(f"{nd.name}'s api.json", 120, lambda: os.path.exists(api_json))
            a = json.load(open(api_json))
            nd.url, nd.token = a["url"], a["token"]

            def ready(nd=nd):
                try:
                    s = nd.api("GET", "/status")
                except OSError:
                    return False
                return "ready" in json.dumps(s) and "connected" in json.dumps(s)

            wait_until(f"{nd.name} ready and connected", 120, ready, every=0.1)
        print(f"{n} nodes up in {time.monotonic() - t_start:.1f} s", file=sys.stderr)

        owner = nodes[0]
        space = owner.api("POST", "/spaces", {"name": "Bench"})
        sid = space["id"]
        general = next(c["id"] for c in space["channels"] if c["name"] == "general" and c["kind"] == "text")
        code = owner.api("POST", f"/spaces/{sid}/invites", {})["code"]
        t_join = time.monotonic()
        for nd in nodes[1:]:
            nd.api("POST", "/spaces/join", {"invite": code})
            wait_until(f"{nd.name} joins", 120,
                       lambda nd=nd: nd.api("GET", f"/spaces/{sid}")["membership"] == "member", every=0.1)
        wait_until("every node sees every member", 300,
                   lambda: all(len(nd.api("GET", f"/spaces/{sid}")["members"]) == n for nd in nodes), every=0.5)
        print(f"{n - 1} joins in {time.monotonic() - t_join:.1f} s", file=sys.stderr)

        for nd in nodes:
            nd.events = subprocess.Popen([node_bin, "--data-dir", nd.dir, "events"], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, env=env)
            procs.append(nd.events)
            threading.Thread(target=nd.read_events, daemon=True).start()
        time.sleep(2)  # the streams are open

        def send_and_time(body, readers):
            b0 = sender_bytes(owner.proc.pid, port)
            r0 = relayed_total(metrics_url)
            t0 = time.monotonic()
            owner.api("POST", f"/channels/{general}/messages", {"body": body})
            wait_until(f"'{body}' reaches every member", 120, lambda: all(r.saw(body) for r in readers), every=0.01)
            times = [r.saw(body) - t0 for r in readers]
            time.sleep(0.5)  # acks and receipts settle before the byte count
            b1 = sender_bytes(owner.proc.pid, port)
            r1 = relayed_total(metrics_url)
            relayed = None if r0 is None or r1 is None else r1 - r0
            return max(times), statistics.median(times), b1 - b0, relayed

        readers = nodes[1:]
        first = send_and_time("first message", readers)
        steady = []
        for k in range(args.messages):
            time.sleep(1)
            steady.append(send_and_time(f"steady {k}", readers))

        kicked = nodes[-1]
        owner.api("POST", f"/spaces/{sid}/members/{kicked.user_id}/kick")
        wait_until("every member applied the kick", 120,
                   lambda: all(len(nd.api("GET", f"/spaces/{sid}")["members"]) == n - 1 for nd in nodes[:-1]), every=0.2)
        time.sleep(1)
        rotation = send_and_time("after the kick", nodes[1:-1])
        time.sleep(2)
        leaked = kicked.saw("after the kick") is not None
        after = []
        for k in range(5):
            time.sleep(1)
            after.append(send_and_time(f"after {k}", nodes[1:-1]))

        load_after = open("/proc/loadavg").read().split()[:3]
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")

        def row(label, r):
            mx, med, by, rel = r
            return f"| {label} | {med * 1000:.0f} | {mx * 1000:.0f} | {by:,} | {rel if rel is not None else '–'} |"

        def mean_row(label, rs):
            mx = statistics.median([r[0] for r in rs])
            med = statistics.median([r[1] for r in rs])
            by = round(statistics.mean([r[2] for r in rs]))
            rel = [r[3] for r in rs if r[3] is not None]
            return row(label, (mx, med, by, round(statistics.mean(rel)) if rel else None))

        print(f"\nSpace of {n} real nodes ({os.path.relpath(bin_dir, ROOT)}), one server, 127.0.0.1; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, {cpu}; "
              f"load average before {' '.join(load_before)}, after {' '.join(load_after)}\n")
        print("| message | median member (ms) | last member (ms) | owner's bytes sent | frames relayed by the server |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(row(f"first (key share to {n - 1} members)", first))
        print(mean_row(f"steady, median of {len(steady)} (bytes: mean)", steady))
        print(row(f"first after a kick (new key to {n - 2})", rotation))
        print(mean_row(f"after the rotation, median of {len(after)}", after))
        print(f"\nthe kicked member received the message sent after its kick: {'YES (bug)' if leaked else 'no'}")
    finally:
        for p in reversed(procs):
            try:
                p.kill()
                p.wait(timeout=10)
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
