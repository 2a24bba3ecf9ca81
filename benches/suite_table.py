#!/usr/bin/env python3
"""Rewrites the suite section of BENCHMARKS.md from criterion's results.

Reads every `target/criterion/**/new/benchmark.json` (the bench's id and throughput) and the
`estimates.json` beside it (nanoseconds per iteration) written since the run started, and
replaces what lies between `<!-- suite:begin -->` and `<!-- suite:end -->` with a table: each
bench's figure, the limit it is read against (a bench of the same group) and the ratio, and
the command that reproduces it; then issue 19's targets, met or not.

Called by benches/run_suite.sh; usage: suite_table.py CRITERION_DIR BENCHMARKS_MD STARTED_UNIX
HEADER_FILE BENCH...
"""

import json
import os
import re
import sys

BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"

# The suite's benches, each with the groups it writes, in the order the table lists them.
GROUPS = {
    "codec": [
        "codec_broadcast_64B",
        "codec_broadcast_64B_unsigned",
        "codec_table_write_1KiB",
        "codec_hereis_128KiB",
    ],
    "relay": ["relay_8_peers"],
    "chord": ["chord_route_2e14", "chord_sim_4096"],
    "mesh": ["mesh_flood_10k_nodes_degree_8"],
    "loopback": ["loopback_broadcast_64B"],
    "blocks": ["blocks_64MiB"],
    "replicate": ["replicate_64MiB", "replicate_64MiB_on_cpu"],
    "run_output": ["run_output_16MiB"],
    "drops": ["drops_manifest", "drops_root_10000_files"],
}


def limit_of(group, fid):
    """The id (in the same group) a bench is read against, or None (a limit itself, or none)."""
    if group.startswith("codec_") and fid.startswith("frame_"):
        return "postcard_" + fid[len("frame_"):]
    if group == "relay_8_peers" and fid.endswith("signatures_on"):
        return "ed25519_batch_verify"
    if group == "chord_route_2e14" and fid == "route_step":
        return "sorted_ring_search"
    if group.startswith("mesh_flood") and fid.startswith("receptions"):
        return "floor"
    if group == "loopback_broadcast_64B" and fid != "raw_tcp_floor":
        return "raw_tcp_floor"
    if group == "blocks_64MiB" and fid.startswith("chunk"):
        return "blake3"
    if group.startswith("replicate_64MiB") and fid.startswith("pipeline"):
        return "blake3_whole"
    if group == "run_output_16MiB" and fid.startswith("engines"):
        return "noise_floor"
    if group == "drops_manifest" and fid == "verify":
        return "ed25519_verify"
    if group == "drops_root_10000_files" and fid == "root_hasher":
        return "blake3_encoded"
    return None


def rate(result):
    """(per second, unit) from a result's throughput and median time."""
    kind, n = next(iter(result["throughput"].items()))
    per_s = n / result["ns"] * 1e9
    return per_s, ("B/s" if kind == "Bytes" else "elem/s")


def human(per_s, unit):
    if unit == "B/s":
        for scale, name in ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
            if per_s >= scale:
                return f"{per_s / scale:.3g} {name}"
        return f"{per_s:.3g} B/s"
    for scale, name in ((1e6, "M/s"), (1e3, "k/s")):
        if per_s >= scale:
            return f"{per_s / scale:.3g} {name}"
    return f"{per_s:.3g} /s"


def human_ns(ns):
    for scale, name in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if ns >= scale:
            return f"{ns / scale:.3g} {name}"
    return f"{ns:.3g} ns"


def load(criterion_dir, started, groups):
    results = {}
    for root, _dirs, files in os.walk(criterion_dir):
        if not root.endswith(os.sep + "new") or "benchmark.json" not in files:
            continue
        bench_path = os.path.join(root, "benchmark.json")
        est_path = os.path.join(root, "estimates.json")
        if not os.path.exists(est_path) or os.path.getmtime(est_path) < started:
            continue
        with open(bench_path) as f:
            bench = json.load(f)
        if bench["group_id"] not in groups or not bench.get("throughput"):
            continue
        with open(est_path) as f:
            est = json.load(f)
        fid = bench["full_id"][len(bench["group_id"]) + 1:]
        results[(bench["group_id"], fid)] = {
            "throughput": bench["throughput"],
            "ns": est["median"]["point_estimate"],
        }
    return results


def table(results, benches):
    lines = [
        "| bench | figure | per iteration | limit beside it | limit's figure | ratio | command |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for bench in benches:
        for group in GROUPS[bench]:
            ids = sorted(fid for (g, fid) in results if g == group)
            for fid in ids:
                r = results[(group, fid)]
                per_s, unit = rate(r)
                limit = limit_of(group, fid)
                lim_cells = ["", "", ""]
                if limit and (group, limit) in results:
                    lim_s, lim_unit = rate(results[(group, limit)])
                    ratio = per_s / lim_s if lim_unit == unit else float("nan")
                    lim_cells = [f"`{limit}`", human(lim_s, lim_unit), f"{ratio:.2f}"]
                pattern = "^" + re.escape(f"{group}/{fid}").replace("\\/", "/") + "$"
                command = f"`cargo bench -p weft-benches --bench {bench} -- '{pattern}'`"
                lines.append(
                    f"| `{group}/{fid}` | {human(per_s, unit)} | {human_ns(r['ns'])} | "
                    + " | ".join(lim_cells)
                    + f" | {command} |"
                )
    return lines


def paired_of(criterion_dir, started):
    """The relay bench's paired measurement of this run (signed relay and verification alone,
    alternated on the same broadcasts), or {}."""
    path = os.path.join(criterion_dir, "relay_paired.json")
    if not os.path.exists(path) or os.path.getmtime(path) < started:
        return {}
    with open(path) as f:
        return json.load(f)


def targets(results, paired):
    """Issue 19's part-5 targets, from this run's figures (rows whose benches did not run
    are left out)."""
    rows = []
    for group, what in (("codec_broadcast_64B", "with its origin proof"),
                        ("codec_broadcast_64B_unsigned", "unsigned")):
        codec = results.get((group, "frame_encode_decode"))
        raw = results.get((group, "postcard_encode_decode"))
        if codec:
            ns = codec["ns"]
            raw_ns = f" (raw postcard: {raw['ns']:.0f} ns)" if raw else ""
            rows.append(
                f"| frame encode + decode of a 64-byte BROADCAST, {what}: ≤ 100 ns | {ns:.0f} ns{raw_ns} "
                f"| {'met' if ns <= 100 else '**not met**'} |"
            )
    for links in ("plaintext", "noise"):
        r = results.get(("relay_8_peers", f"{links}/signatures_off"))
        if r:
            per_s, _ = rate(r)
            rows.append(
                f"| relay, signatures off, {links} links: ≥ 2,000,000 inbound messages/s on one core "
                f"| {per_s / 1e6:.2f} M/s | {'met' if per_s >= 2e6 else '**not met**'} |"
            )
    verify = results.get(("relay_8_peers", "ed25519_batch_verify"))
    for links in ("plaintext", "noise"):
        p = paired.get(links)
        if p:
            share = p["relay_per_s"] / p["verify_per_s"]
            rows.append(
                f"| relay, signatures on, {links} links: ≥ 80 % of ed25519 batch verification alone "
                f"(paired: the two alternated on the same {p['messages']} broadcasts) "
                f"| {p['relay_per_s'] / 1e3:.1f} k/s of {p['verify_per_s'] / 1e3:.1f} k/s = {100 * share:.0f} % "
                f"| {'met' if share >= 0.8 else '**not met**'} |"
            )
            continue
        r = results.get(("relay_8_peers", f"{links}/signatures_on"))
        if r and verify:
            per_s, _ = rate(r)
            v_s, _ = rate(verify)
            share = per_s / v_s
            rows.append(
                f"| relay, signatures on, {links} links: ≥ 80 % of ed25519 batch verification alone "
                f"| {per_s / 1e3:.1f} k/s of {v_s / 1e3:.1f} k/s = {100 * share:.0f} % "
                f"| {'met' if share >= 0.8 else '**not met**'} |"
            )
    if not rows:
        return []
    return ["", "Issue 19's targets, from the figures above:", "",
            "| target | figure | |", "|---|---:|---|"] + rows


def main():
    criterion_dir, md_path, started, header_path = sys.argv[1:5]
    benches = sys.argv[5:]
    groups = {g for b in benches for g in GROUPS[b]}
    results = load(criterion_dir, float(started), groups)
    with open(header_path) as f:
        header = f.read().rstrip("\n").split("\n")
    paired = paired_of(criterion_dir, float(started))
    body = [BEGIN] + header + [""] + table(results, benches) + targets(results, paired) + [END]
    with open(md_path) as f:
        text = f.read()
    if BEGIN in text and END in text:
        before = text[: text.index(BEGIN)]
        after = text[text.index(END) + len(END):]
    else:
        sys.exit(f"{md_path}: no {BEGIN} ... {END} section to rewrite")
    with open(md_path, "w") as f:
        f.write(before + "\n".join(body) + after)
    print(f"{md_path}: {len(results)} results written")


if __name__ == "__main__":
    main()
