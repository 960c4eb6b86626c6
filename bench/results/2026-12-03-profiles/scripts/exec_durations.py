#!/usr/bin/env python3
"""exec_durations.py MONLOG COUNT < perf script -F pid,tid,time,event of
perf record -e syscalls:sys_enter_execve,sched:sched_process_exec,
syscalls:sys_enter_clone3,syscalls:sys_exit_clone3 -p MASTER (children
inherited): per tenth of the room count, the child's execve duration
(sys_enter_execve -> sched_process_exec: the whole exec, including the kernel
closing every inherited O_CLOEXEC descriptor in begin_new_exec) and the
parent's clone3 duration (posix_spawn's CLONE_VFORK: the parent waits until
the child has released the shared mm in exec)."""
import sys, re, bisect, statistics as st
mon = []
for l in open(sys.argv[1]):
    p = l.split(); mon.append((float(p[0]), int(re.split('[=~]', p[1])[1])))
N = int(sys.argv[2])
ts = [t for t, _ in mon]
def rooms(t):
    i = min(bisect.bisect_left(ts, t), len(ts) - 1); return mon[i][1]
enter = {}; c3 = {}; ex = []; cl = []
events = []
for l in sys.stdin:
    m = re.match(r'\s*(\d+)/(\d+)\s+(\d+\.\d+):\s+(\S+):', l)
    if m: events.append((int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4)))
# the master: the pid that enters clone3 most often
from collections import Counter
parent_pid = Counter(p for p, _, _, e in events if e.endswith('sys_enter_clone3')).most_common(1)[0][0]
for pid, tid, t, ev in events:
    if ev.endswith('sys_enter_execve'): enter[tid] = t
    elif ev.endswith('sched_process_exec') and tid in enter: ex.append((t, (t - enter.pop(tid)) * 1e3))
    elif ev.endswith('sys_enter_clone3') and pid == parent_pid: c3[tid] = t
    elif ev.endswith('sys_exit_clone3') and tid in c3: cl.append((t, (t - c3.pop(tid)) * 1e3))
for name, v in (('child execve -> sched_process_exec, ms', ex), ('master clone3 (posix_spawn, CLONE_VFORK wait), ms; includes thread creations', cl)):
    print(f"{name}: n={len(v)}")
    b = {}
    for t, d in v: b.setdefault(min(rooms(t) * 10 // N, 9), []).append(d)
    print("| rooms | n | median | mean | p90 |\n|---|---|---|---|---|")
    for k in sorted(b):
        x = sorted(b[k]); p90 = x[int(0.9 * (len(x) - 1))]
        print(f"| {k*N//10}-{(k+1)*N//10} | {len(x)} | {st.median(x):.3f} | {st.mean(x):.3f} | {p90:.3f} |")
    print()
