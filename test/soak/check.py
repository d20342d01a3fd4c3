#!/usr/bin/env python3
#
# test/soak/check.py: the soak's verdict (called by test/soak/run.sh).
#
# Reads the tables exported after the drain (deliveries, links, the
# clients' outcomes, the stats view), the flaky receiver's log and pgbench's
# output; prints a summary table and every violated invariant (with up to
# five examples each); exits 1 when anything is violated.
#
# A delivery's expected fate follows from the receiver mode it was sent to
# (the second path segment of a callback URL, the instance's reply mode for
# replies): ok and f<N> (N faults, then 200) must be delivered within N + 1
# attempts; dead must be dead after all attempts; gone (410) dead after one;
# replies of the instance without a reply endpoint stay held.

import argparse
import csv
import json
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from urllib.parse import urlsplit

ap = argparse.ArgumentParser()
ap.add_argument("--export", required=True)
ap.add_argument("--receiver-log", required=True)
ap.add_argument("--pgbench", required=True)
a = ap.parse_args()


def rows(name):
    with open(os.path.join(a.export, name), newline="") as f:
        return list(csv.DictReader(f))


def lines(name):
    p = os.path.join(a.export, name)
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return [l.rstrip("\n") for l in f if l.strip()]


run = json.load(open(os.path.join(a.export, "run.json")))
deliveries = rows("deliveries.csv")
links = rows("links.csv")
outcomes = rows("outcomes.csv")
stats = {r["metric"]: r["value"] for r in rows("stats.csv")}
requests = []
with open(a.receiver_log) as f:
    for l in f:
        if l.endswith("\n"):
            requests.append(json.loads(l))
pgbench = open(a.pgbench).read()
attempts_max = run["attempts_max"]

violations = defaultdict(list)   # check name -> examples
checks = []                      # check names in order, to print even when fine


def check(name, ok, example=None):
    if name not in checks:
        checks.append(name)
    if not ok:
        violations[name].append(example)


def mode_of(d):
    if d["kind"] == "reply":
        return d["reply_mode"]
    parts = [p for p in urlsplit(d["destination"]).path.split("/") if p]
    return parts[1] if len(parts) > 1 else "?"


def budget(mode):
    m = re.fullmatch(r"f(\d+)", mode)
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- receiver
by_wid = defaultdict(list)
no_wid = 0
for r in requests:
    if r["wid"]:
        by_wid[r["wid"]].append(r)
    else:
        no_wid += 1
for rs in by_wid.values():
    rs.sort(key=lambda r: r["n"])    # log order is answer order, not arrival
wids = {d["webhook_id"]: d for d in deliveries}
check("every request carries a webhook-id", no_wid == 0, f"{no_wid} requests without one")
for w in by_wid:
    check("no webhook-id the table does not know (none invented)", w in wids, w)
for r in requests:
    check("every request's Standard Webhooks signature verifies", r["sig"] is True,
          f'{r["wid"]} {r["path"]} sig={r["sig"]}')

# ---------------------------------------------------------------- deliveries
hidden = 0          # requests beyond the worker's attempts (libcurl re-sends)
hidden_after_drop = 0
mode_stats = defaultdict(Counter)
latency_ok = []        # mode ok: queued -> delivered (recorded)
latency_send = []      # queued -> request at the receiver
latency_record = []    # request at the receiver -> delivered recorded
for d in deliveries:
    mode = mode_of(d)
    st = d["status"]
    att = int(d["attempts"])
    reqs = by_wid.get(d["webhook_id"], [])
    proc = [r for r in reqs if r["processed"]]
    label = f'delivery {d["id"]} {d["kind"]} {d["event"]} mode={mode} status={st} attempts={att} requests={len(reqs)} last={d["last_http_status"]} {d["last_error"][:60]}'
    mode_stats[(d["kind"], mode)][st] += 1
    mode_stats[(d["kind"], mode)]["attempts"] += att
    check("queue drained: nothing left queued", st != "queued", label)
    check("no lease left behind", d["leased"] != "t", label)
    if mode == "held":
        check("replies without an endpoint stay held, never sent", st == "held" and not reqs, label)
        continue
    check("nothing held that has an endpoint", st != "held", label)
    if mode in ("ok",) or re.fullmatch(r"f\d+", mode):
        check("none dead that should have succeeded", st == "delivered", label)
        check("delivered within N+1 attempts (no attempt lost or wasted)",
              st != "delivered" or 1 <= att <= budget(mode) + 1, label)
        check("a delivered event was processed by the receiver", st != "delivered" or proc, label)
        if mode == "ok" and d["delivered"] and reqs:
            latency_ok.append(float(d["delivered"]) - float(d["created"]))
            latency_send.append(reqs[0]["t"] - float(d["created"]))
            latency_record.append(float(d["delivered"]) - reqs[-1]["t"])
    elif mode == "dead":
        check("dead only when it should be (receiver always failing: dead after all attempts)",
              st == "dead" and att == attempts_max, label)
    elif mode == "gone":
        check("410 Gone: dead after one attempt", st == "dead" and att == 1 and d["last_http_status"] == "410", label)
    else:
        check("known receiver mode", False, label)
    if st == "dead":
        check("a dead delivery was never processed by the receiver", not proc, label)
    check("the receiver saw every attempt (requests >= attempts)", len(reqs) >= att, label)
    if len(reqs) > att:
        extra = len(reqs) - att
        hidden += extra
        drops = sum(1 for r in reqs if r["fault"] in ("drop", "reset"))
        hidden_after_drop += min(extra, drops)
        check("extra requests only after a dropped/reset connection (libcurl re-send)",
              extra <= drops, label)

# ---------------------------------------------------------------- links
dl_by_link = defaultdict(list)
for d in deliveries:
    dl_by_link[d["link_id"]].append(d)
out_by_link = defaultdict(list)
for o in outcomes:
    if o["uuid"]:
        out_by_link[o["uuid"]].append(o)
rq_by_link = defaultdict(list)
for r in requests:
    if r["uuid"]:
        rq_by_link[r["uuid"]].append(r)

final = Counter()
for l in links:
    lid = l["id"]
    st = l["status"]
    key = st if st != "failed" else f'failed ({l["reason"]})'
    final[key] += 1
    cbs = Counter(d["event"] for d in dl_by_link[lid] if d["kind"] == "callback")
    reps = Counter(d["event"] for d in dl_by_link[lid] if d["kind"] == "reply")
    label = f'link {lid} {l["flavour"]} status={st} reason={l["reason"]} callbacks={dict(cbs)} replies={dict(reps)}'
    want = {"verified": {"otp_link.verified": 1}, "expired": {"otp_link.expired": 1},
            "pending": {}}.get(st)
    if st == "failed":
        want = {"otp_link.failed": 1} if l["reason"] == "wrong_sender" else {}
    check("one callback per state change, none for pending/cancelled (no delivery lost, none doubled)",
          dict(cbs) == want, label)
    if st == "verified":
        check("a verified link has exactly one success reply", dict(reps) == {"reply.success": 1}, label)
    else:
        check("no success reply unless verified", "reply.success" not in reps, label)
        check("at most 3 replies to a finished link",
              sum(reps.values()) <= 3 and set(reps) <= {"reply.failed", "reply.expired"}, label)
    check("no pending link left overdue after the drain (expiry sweep)", l["overdue"] != "t", label)
    if st == "expired":
        dest = [d["destination"] for d in dl_by_link[lid] if d["event"] == "otp_link.expired"]
        want_path = "/cb/expired" if l["has_expired_cb"] == "t" else "/cb/failed"
        check("expired callback goes to callback.expired, else callback.failed",
              all(x.endswith(want_path) for x in dest), label)
    ver = [o for o in out_by_link[lid] if o["outcome"] == "verified"]
    check("no link verified twice (one 'verified' outcome per verified link, none otherwise)",
          len(ver) == (1 if st == "verified" else 0), label + f" verified_outcomes={len(ver)}")
    if st == "verified" and ver:
        check("verified_chat_id is the sender of the verifying message",
              l["chat_id"] == ver[0]["chat_id"], label)
        if l["flavour"] == "bound":
            check("a phone-bound link is verified only by its phone",
                  l["chat_id"] == l["user_phone"] + "@c.us", label)
    # the receiver's view of this link's callbacks
    for typ in ("otp_link.verified", "otp_link.expired", "otp_link.failed"):
        seen = {r["wid"] for r in rq_by_link[lid] if r["type"] == typ}
        acked = {r["wid"] for r in rq_by_link[lid] if r["type"] == typ and r["processed"]}
        check("the receiver never saw two webhook-ids for one link's event", len(seen) <= 1,
              f"{label} {typ} wids={sorted(seen)}")
        check("the receiver never acknowledged two webhook-ids for one link's event", len(acked) <= 1,
              f"{label} {typ} acked={sorted(acked)}")
    if st == "verified":
        acked = {r["wid"] for r in rq_by_link[lid] if r["type"] == "otp_link.verified" and r["processed"]}
        d = [d for d in dl_by_link[lid] if d["event"] == "otp_link.verified"]
        if d and d[0]["status"] == "delivered":
            check("every verified link: exactly one success callback acknowledged (its webhook-id)",
                  acked == {d[0]["webhook_id"]}, f"{label} acked={sorted(acked)}")
        else:
            check("every verified link: exactly one success callback acknowledged (its webhook-id)",
                  not acked and d and mode_of(d[0]) in ("dead", "gone"), f"{label} acked={sorted(acked)}")

# ---------------------------------------------------------------- outcomes
first_outcome = {}
for o in outcomes:
    if o["script"] != "dup" and o["message_id"] and o["message_id"] not in first_outcome:
        first_outcome[o["message_id"]] = o["outcome"]
allowed = {
    "verify": {"verified", "already_verified", "expired", "failed"},
    "race": {"verified", "already_verified"},
    "late": {"expired", "already_verified"},
    "wrong": {"failed", "already_verified"},
    "unknown": {"unknown_code", "blocked"},
    "dup": {"duplicate"},
    "cancel": {"cancelled", "not_cancelled"},
}
by_script = defaultdict(Counter)
for o in outcomes:
    by_script[o["script"]][o["outcome"]] += 1
    check("each message's outcome is one its situation allows", o["outcome"] in allowed[o["script"]],
          f'{o["script"]} {o["message_id"]} -> {o["outcome"]}')
    if o["script"] == "dup":
        check("a repeated message_id is a duplicate reporting the first outcome",
              o["outcome"] == "duplicate" and o["original"] == first_outcome.get(o["message_id"]),
              f'{o["message_id"]} -> {o["outcome"]} original={o["original"]} first={first_outcome.get(o["message_id"])}')
race_links = defaultdict(Counter)
for o in outcomes:
    if o["script"] == "race":
        race_links[o["link"]][o["outcome"]] += 1
for lid, c in race_links.items():
    check("concurrent messages for one code verify it exactly once", c["verified"] == 1, f"{lid} {dict(c)}")
contended = sum(1 for c in race_links.values() if sum(c.values()) > 1)

# ---------------------------------------------------------------- logs, pgbench
for name, log in (("the worker logged no ERROR/WARNING", "worker_errors.log"),
                  ("no backend crashed", "crashes.log"),
                  ("no client statement failed", "client_errors.log")):
    check(name, True)
    for l in lines(log):
        check(name, False, l[:200])
check("pgbench finished cleanly (exit 0, no client aborted)",
      run["pgbench_rc"] == 0 and "aborted" not in pgbench, f'rc={run["pgbench_rc"]}')
check("drained within the bound", run["drained"] == 1, f'drain {run["drain_s"]} s')
check("the installed otp_link.so was this tree's build from start to end (no other install meanwhile)",
      run.get("library_unchanged", 1) == 1)
orphans = open(os.path.join(a.export, "orphan_links")).read().strip()
check("every link is one the clients generated", orphans == "0", orphans)


# ---------------------------------------------------------------- summary
def pgb(pattern, default="?"):
    m = re.search(pattern, pgbench, re.M)
    return m.group(1) if m else default


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def ms3(xs):
    return (f"{pct(xs, 50) * 1000:.0f} / {pct(xs, 95) * 1000:.0f} / "
            f"{max(xs or [float('nan')]) * 1000:.0f} ms")


flav = Counter(l["flavour"] for l in links)
faults = Counter(r["fault"] or "200" for r in requests)
dup_processed = sum(1 for r in requests if r["dup"])
dup_wids = len({r["wid"] for r in requests if r["dup"]})
kinds = defaultdict(Counter)
for d in deliveries:
    kinds[d["kind"]][d["status"]] += 1
total_attempts = sum(int(d["attempts"]) for d in deliveries)

print()
print(f'otp_link soak  {run["date"]}  {run["pg"]}  commit {run["commit"]}  seed {run["seed"]}')
print(f'  load {run["load_s"]:.0f} s, {run["clients"]} pgbench clients at {run["rate"]} tx/s; '
      f'retry_schedule \'{run["schedule"]}\', timeout {run["timeout_ms"]} ms')
print()
print("| figure | value |")
print("|---|---|")
rowsum = [
    ("pgbench transactions", pgb(r"number of transactions actually processed: (\d+)")),
    ("pgbench tps / latency avg", f'{pgb(r"^tps = ([0-9.]+)")} / {pgb(r"^latency average = ([0-9.]+ ms)")}'),
    ("links generated", f'{len(links)} (normal {flav["normal"]}, race {flav["race"]}, short {flav["short"]}, phone-bound {flav["bound"]})'),
    ("links at the end", ", ".join(f"{k} {v}" for k, v in sorted(final.items()))),
    ("messages consumed", f'{sum(1 for o in outcomes if o["script"] != "cancel")}'),
] + [
    (f"  {s}", ", ".join(f"{k} {v}" for k, v in sorted(c.items()))) for s, c in sorted(by_script.items())
] + [
    ("race links / contended (>1 message)", f"{len(race_links)} / {contended}"),
    ("deliveries", f'{len(deliveries)}: ' + "; ".join(
        f'{k} ' + ", ".join(f"{s} {n}" for s, n in sorted(c.items())) for k, c in sorted(kinds.items()))),
    ("delivery attempts (worker)", str(total_attempts)),
    ("receiver requests", f'{len(requests)}: ' + ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))),
    ("re-sent webhook-ids processed again (at-least-once, same id)", f"{dup_processed} requests, {dup_wids} ids"),
    ("requests beyond attempts (libcurl re-send after a dropped keep-alive)", f"{hidden} ({hidden_after_drop} after drop/reset)"),
    ("mode ok: queued -> delivered p50 / p95 / max", ms3(latency_ok)),
    ("  of which queued -> at the receiver", ms3(latency_send)),
    ("  of which at the receiver -> recorded delivered", ms3(latency_record)),
    ("drain after the load", f'{run["drain_s"]:.1f} s'),
    ("worker CPU time (whole run)", run["worker_cpu"]),
    ("otp_link_stats", ", ".join(f"{k} {stats.get(k, '?')}" for k in (
        "links_generated", "verification_rate", "expiration_rate", "failed_attempts",
        "time_to_verify_p95_s", "deliveries_dead", "delivery_attempts"))),
]
for k, v in rowsum:
    print(f"| {k} | {v} |")

print()
print("| delivery kind / receiver mode | delivered | dead | held | mean attempts |")
print("|---|---|---|---|---|")
for (kind, mode), c in sorted(mode_stats.items()):
    n = c["delivered"] + c["dead"] + c["held"] + c["queued"]
    print(f'| {kind} {mode} | {c["delivered"]} | {c["dead"]} | {c["held"]} | {c["attempts"] / max(n, 1):.2f} |')

print()
print("| invariant | violations |")
print("|---|---|")
for name in checks:
    print(f"| {name} | {len(violations.get(name, []))} |")
bad = {k: v for k, v in violations.items() if v}
if bad:
    print()
    for name, ex in bad.items():
        print(f"VIOLATION: {name}: {len(ex)}")
        for e in ex[:5]:
            print(f"    {e}")
    print(f"\nsoak: FAILED ({sum(len(v) for v in bad.values())} violations)")
    sys.exit(1)
print("\nsoak: OK (no violation)")
