"""The thesis benchmark's output: raw JSON, a Markdown table with the thesis' numbers beside ours, and
matplotlib plots (throughput against error share, request-time percentiles)."""
from __future__ import annotations

import json
from pathlib import Path

THESIS_TCP = {"untraced": 100.0, "tc": 97.7, "traced": 89.7}
"""Thesis, iperf3 TCP throughput in % of untraced (the rows it reports numbers for)."""
THESIS_HTTP = {"0%": 97.0, "100%": 89.0}
"""Thesis, h2load requests/s traced in % of untraced, at 0% and 100% error responses."""
TCP_LABELS = {"untraced": "untraced", "tc": "TC hooks only (clsact, no program)", "pass": "pass program (tcx)",
              "traced": "traced (http monitor, mirroring armed)",
              "mirroring": "mirroring every packet (sample=1)", "tcpdump": "tcpdump with a filter (libpcap)"}


def pct(x: float, base: float) -> str:
    return f"{100 * x / base:.1f}%" if base else "-"


def paired(values: list[float], base: list[float]) -> str:
    """Median of the per-round ratios (each round ran both rows within a minute or two): less exposed to
    the machine's load drifting over the run than the ratio of the medians."""
    ratios = sorted(v / b for v, b in zip(values, base) if b)
    if not ratios:
        return "-"
    mid = len(ratios) // 2
    med = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return f"{100 * med:.1f}%"


def _tcp_table(tcp: dict, thesis: dict | None = None) -> list[str]:
    base = tcp["untraced"]["median_bps"]
    lines = ["| row | Gbit/s (median) | % of untraced | per-round ratio (median) | thesis |", "|---|---:|---:|---:|---:|"]
    for name, r in tcp.items():
        th = (thesis or {}).get(name)
        lines.append(f"| {TCP_LABELS.get(name, name)} | {r['median_bps'] / 1e9:.2f} | {pct(r['median_bps'], base)} | "
                     f"{paired(r['runs_bps'], tcp['untraced']['runs_bps'])} | {f'{th}%' if th is not None else '-'} |")
    return lines


def _http_table(http: dict) -> list[str]:
    header = ("| errors | untraced req/s | traced req/s | traced % | per-round ratio | thesis % | p50 / p99 / p99.9 µs untraced | "
              "p50 / p99 / p99.9 µs traced | h2load 5xx | triggers | mirrored conns | mirrored pkts | missed | false | "
              "counts exact | clone errors, backlog drops |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---|---|---|---|---|---|---:|---:|---|---|"]
    for share, rows in http.items():
        u, t = rows["untraced"], rows["traced"]

        def pcts(r: dict) -> str:
            p = r["median_percentiles_us"]
            return " / ".join(f"{p[k]:.0f}" for k in ("p50", "p99", "p99.9") if k in p)
        th = THESIS_HTTP.get(share)
        lines.append(
            f"| {share} | {u['median_rps']:.0f} | {t['median_rps']:.0f} | {pct(t['median_rps'], u['median_rps'])} | "
            f"{paired([r['rps'] for r in t['runs']], [r['rps'] for r in u['runs']])} | "
            f"{f'{th}%' if th else '-'} | {pcts(u)} | {pcts(t)} | {_runs(t['h2load_5xx'])} | {_runs(t['triggers'])} | "
            f"{_runs(t['mirrored_connections'])} | {_runs(t['mirrored_packets'])} | {t['missed']} | {t['false']} | "
            f"{'yes' if t['counts_exact'] else 'NO'} | {t.get('mirror_errors', '-')}, {t.get('backlog_drops', '-')} |")
    return lines


def _runs(values: list) -> str:
    return ", ".join(str(v) for v in values)


def _percentile_table(http: dict) -> list[str]:
    keys = list(next(iter(http.values()))["untraced"]["median_percentiles_us"])
    lines = ["| errors | row | " + " | ".join(keys) + " |", "|---|---|" + ("---:|" * len(keys))]
    for share, rows in http.items():
        for name in ("untraced", "traced"):
            p = rows[name]["median_percentiles_us"]
            lines.append(f"| {share} | {name} | " + " | ".join(f"{p[k]:.0f}" for k in keys) + " |")
    return lines


def markdown(data: dict) -> str:
    s = data["settings"]
    out = [f"# Thesis benchmark ({data['date']})", "",
           (f"Command: `make bench-thesis`{' PYTEST_ARGS=--thesis-durations' if s['thesis_durations'] else ''}; "
           f"{s['rounds']} interleaved rounds, medians; iperf3 `-i 1 -J -Z -O {s['omit']} -t {s['duration']}`; "
           f"h2load `-c 10 -m 1 -N 15 -T 15 --h1 -n {data.get('h2load_requests', s.get('h2load_requests', '?'))}`. "
           f"Load average before/after: {data['load_before']} / {data.get('load_after', '?')} (2 CPUs shared)."), ""]
    if data.get("tcp"):
        out += ["## iperf3 TCP (server's eth0)", "", *_tcp_table(data["tcp"], THESIS_TCP), ""]
    if data.get("http"):
        out += ["## nginx + h2load by error share (server's eth0)", "", *_http_table(data["http"]), "",
                "Request time percentiles (µs, h2load's per-request log):", "", *_percentile_table(data["http"]), ""]
    tables = data.get("traced_map")
    if tables:
        base = tables["untraced"]["median_rps"]
        out += ["## The traced table at 100% errors (h2load; every packet looks its connection up)", "",
                "| traced_map | req/s | % of untraced | missed | false |", "|---|---:|---:|---:|---:|"]
        for name in ("hash", "lru", "lru_percpu"):
            r = tables[name]
            out.append(f"| {name} | {r['median_rps']:.0f} | {pct(r['median_rps'], base)} | {r['missed']} | {r['false']} |")
        out.append("")
    cpus = data.get("cpus", {})
    if cpus.get("tcp"):
        out += ["## Against the number of CPUs (taskset)", "", "| run | Gbit/s or req/s | traced % of untraced |",
                "|---|---:|---:|"]
        for n in (1, 2):
            u, t = cpus["tcp"][f"untraced@{n}cpu"]["median_bps"], cpus["tcp"][f"traced@{n}cpu"]["median_bps"]
            out.append(f"| iperf3, {n} CPU | {u / 1e9:.2f} → {t / 1e9:.2f} Gbit/s | {pct(t, u)} |")
    if cpus.get("http"):
        for n in (1, 2):
            for share in ("0%", "100%"):
                u = cpus["http"][f"{share} untraced @{n}cpu"]["median_rps"]
                t = cpus["http"][f"{share} traced @{n}cpu"]["median_rps"]
                out.append(f"| h2load {share} errors, {n} CPU | {u:.0f} → {t:.0f} req/s | {pct(t, u)} |")
        out.append("")
    two = data.get("two_hosts", {})
    if two:
        out += ["## Two hosts through a router namespace (monitor on the router)", "",
                *_tcp_table(two["tcp"]), ""]
        h = two["http_100%"]
        out += [(f"h2load at 100% errors: untraced {h['untraced']['median_rps']:.0f} req/s, traced "
                f"{h['traced']['median_rps']:.0f} req/s ({pct(h['traced']['median_rps'], h['untraced']['median_rps'])}); "
                f"missed {h['traced']['missed']}, false {h['traced']['false']}, counts exact: "
                f"{'yes' if h['traced']['counts_exact'] else 'NO'}."), ""]
    cost = data.get("program_cost")
    if cost:
        base = cost["ns_per_packet"]["pass program, any packet"]
        single = cost.get("pass_single_run_ns", base)
        out += [f"## The monitor's own cost per packet (BPF_PROG_TEST_RUN, median of 5 rounds; load {cost['load']})", "",
                "| packet | ns/packet | minus the pass program |", "|---|---:|---:|"]
        for name, ns in cost["ns_per_packet"].items():
            # the exchange runs one packet per test run: compared with the pass program run the same way
            ref = single if "exchange" in name else base
            out.append(f"| {name} | {ns:.0f} | {ns - ref:.0f} |")
        out.append("")
    dates = data.get("dates", {})
    if len(set(dates.values())) > 1:
        out += ["Sections measured at different times: " + ", ".join(f"{k} {v}" for k, v in sorted(dates.items())), ""]
    return "\n".join(out)


def plots(data: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http = data.get("http")
    if not http:
        return
    shares = [int(k.rstrip("%")) for k in http]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("untraced", "o-"), ("traced", "s-")):
        ax.plot(shares, [http[k][name]["median_rps"] for k in http], style, label=name)
    th = http["0%"]["untraced"]["median_rps"]
    ax.plot([0, 100], [th * THESIS_HTTP["0%"] / 100, th * THESIS_HTTP["100%"] / 100], "k--",
            label="thesis traced (scaled to our untraced)")
    ax.set_xlabel("error responses (%)")
    ax.set_ylabel("requests/s (h2load)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("nginx + h2load: throughput against error share")
    fig.tight_layout()
    fig.savefig(out / "thesis_http.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for share in ("0%", "100%"):
        for name, style in (("untraced", "o-"), ("traced", "s--")):
            p = http[share][name]["median_percentiles_us"]
            ax.plot(list(p), list(p.values()), style, label=f"{share} errors, {name}")
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("request time (µs)")
    ax.legend()
    ax.set_title("h2load request-time percentiles")
    fig.tight_layout()
    fig.savefig(out / "thesis_latency.png", dpi=100)
    plt.close(fig)


def write_report(data: dict, out: Path) -> None:
    (out / "thesis.json").write_text(json.dumps(data, indent=1))
    (out / "thesis.md").write_text(markdown(data) + "\n")
    plots(data, out)
    print(markdown(data))
