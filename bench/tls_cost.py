#!/usr/bin/env python3
"""CPU per new TLS connection: Mongrel2 (mbedTLS 2.28) against nginx (OpenSSL), by key exchange.

    python3 bench/tls_cost.py [--duration 3] [--connections 1] [--perf DIR]

Starts bench/whole.py's "ringmaster dispatcher, Mongrel2 TLS" and "nginx TLS1.2+gunicorn sync"
stacks (1 Python process each, the run's own throwaway P-256 certificate), then runs wrk with
`Connection: close` over https (a full handshake per request; neither server resumes) twice per
stack: with OpenSSL's default client offer (X25519, P-256, X448, P-521, P-384: mbedTLS picks by
its own order, P-521 first) and offering P-256 only (an OpenSSL config in OPENSSL_CONF for wrk
and openssl s_client, not for the servers). Prints the group negotiated, connections/s and the
CPU microseconds per connection of each process group, from /proc: CPU time, so a single
connection gives the cost without loading the machine. --perf DIR also records Mongrel2 with
`perf record -g` (read with `perf report -i DIR/mongrel2-<offer>.data --no-children`).
Everything it starts is stopped at the end; it writes under /tmp (and DIR) only.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run
import whole

OFFERS = {"default offer": None, "P-256 only": "P-256"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=1, help="wrk -c")
    p.add_argument("--perf", type=Path, help="also perf record Mongrel2 into this directory")
    args = p.parse_args()
    if not run.ensure_tools():
        return 2
    deploy = whole.load_deploy(argparse.Namespace(m2_setting=None, dispatcher_args=None, handler_args=None))
    venv = run.ensure_venv()
    workdir = Path(tempfile.mkdtemp(prefix="ringmaster-bench-tls-cost-"))
    certs = whole.Certs(workdir / "tls").make()
    envs = {}
    for label, group in OFFERS.items():
        env = dict(os.environ)
        if group:
            conf = workdir / f"client-{group}.cnf"
            conf.write_text(f"openssl_conf = c\n[c]\nssl_conf = s\n[s]\nsystem_default = d\n[d]\nGroups = {group}\n")
            env["OPENSSL_CONF"] = str(conf)
        envs[label] = env
    servers: list = []
    try:
        kinds = [whole.RingmasterDispatcherTLS, whole.NginxTLS12GunicornSync]
        whole.start_group([(k, 1) for k in kinds], "1 procs", venv, workdir / "run", deploy, 4096, {}, servers, certs)
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
        for s in servers:
            for label, env in envs.items():
                probe = subprocess.run(
                    ["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}", "-servername", run.TLS_HOST],
                    input="", capture_output=True, text=True, env=env, timeout=30, check=False,
                )  # fmt: skip
                group = whole.parse_s_client(probe.stdout)["group"]
                groups = s.groups()
                before = {g: sum(whole.cpu_ticks(x) for x in pids) for g, pids in groups.items()}
                perf = None
                if args.perf and "mongrel2" in groups:
                    args.perf.mkdir(parents=True, exist_ok=True)
                    data = args.perf / f"mongrel2-{label.replace(' ', '-')}.data"
                    perf = subprocess.Popen(
                        ["perf", "record", "-g", "-o", str(data), "-p", str(groups["mongrel2"][0])],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                out = subprocess.run(
                    ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                     "-H", "Connection: close", f"https://{run.TLS_HOST}:{s.port}/"],
                    capture_output=True, text=True, env=env, timeout=args.duration + 30, check=False,
                )  # fmt: skip
                if perf is not None:
                    perf.send_signal(2)
                    perf.wait(30)
                res = run.parse_wrk(out.stdout, out.stderr)
                after = {g: sum(whole.cpu_ticks(x) for x in pids) for g, pids in groups.items()}
                n = res["rps"] * args.duration
                cpu = ", ".join(f"{g} {(after[g] - before[g]) * tick_us / n:.0f}" if n else f"{g} n/a" for g in groups)
                print(f"{s.name:38} {label:14} {group:11} {res['rps']:7.1f} conn/s err {res['errors']} "
                      f"| CPU us per connection: {cpu}", flush=True)  # fmt: skip
    finally:
        whole.stop_everything(servers)
    print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
