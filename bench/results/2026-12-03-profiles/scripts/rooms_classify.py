#!/usr/bin/env python3
"""rooms_classify.py MONLOG: reads `perf script -F comm,pid,time,ip,sym,dso` of
the master (with inherited children) on stdin; buckets samples by the number
of room processes at the sample's time (from the per-second monitor log) and
prints CPU ms per created room per category and bucket."""
import sys, re, collections, bisect
mon = []
for line in open(sys.argv[1]):
    p = line.split()
    mon.append((float(p[0]), int(re.split('[=~]', p[1])[1])))
times = [t for t, _ in mon]
def rooms_at(t):
    i = bisect.bisect_left(times, t)
    if i == 0: return mon[0][1]
    if i >= len(mon): return mon[-1][1]
    (t0, r0), (t1, r1) = mon[i-1], mon[i]
    return r0 + (r1 - r0) * (t - t0) / (t1 - t0)
N = int(sys.argv[2]); B = int(sys.argv[3]) if len(sys.argv) > 3 else 10
t_end_create = next(t for t, r in mon if r >= N)

def has(st, pat): return any(re.search(pat, s) for s in st)
first_seen = {}
def classify(comm, st, pid=None, t=None):
    if has(st, r'^do_close_on_exec$'): return 'exec: closing the inherited O_CLOEXEC fds (do_close_on_exec)'
    if comm in ('chatroom', 'exe'):
        if has(st, r'execve'): return 'exec: rest (load_elf_binary, mm setup)'
        f = first_seen.setdefault(pid, t)
        if t - f < 0.5 or comm == 'exe': return 'new worker: startup after exec (first 0.5 s of its samples)'
        return 'running rooms: background CPU of the rooms already created'
    if has(st, r'^do_close_on_exec$'): return 'exec: closing the inherited O_CLOEXEC fds (do_close_on_exec)'
    if has(st, r'execve'): return 'exec: rest (load_elf_binary, mm setup)'
    if has(st, r'^dup_fd$'): return 'clone3: copying the fd table (dup_fd)'
    if has(st, r'clone3|copy_process|__spawn'): return 'clone3: rest'
    if has(st, r'Registry::free_port|lifecycle::Life::get|Registry::reserve|prune_failed') or (st and re.search(r'create_room::\{\{closure\}\}', st[0])): return 'registry scans per create (reserve: live count, free_port, prune_failed)'
    if has(st, r'redb'): return 'redb store (catalog writes)'
    if has(st, r'ipc_server|chat_shared::link|FrameWriter|FrameReader|framing'): return 'IPC with workers (hello, snapshot, heartbeats)'
    if has(st, r'epoll_wait|park'): return 'tokio park / epoll_wait'
    if has(st, r'hyper|axum'): return 'HTTP (hyper/axum) rest'
    if has(st, r'metrics'): return 'metrics'
    return 'other'

def samples(f):
    head=None; st=[]
    for line in f:
        line=line.rstrip('\n')
        if not line.strip():
            if head: yield head, st
            head=None; st=[]; continue
        if line.startswith((' ','\t')):
            m = re.match(r'\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$', line)
            if m: st.append(m.group(1))
        else:
            m = re.match(r'\s*(.+?)\s+(\d+)\s+(\d+\.\d+):', line)
            head = (m.group(1), int(m.group(2)), float(m.group(3))) if m else None; st=[]
    if head: yield head, st

cnt = collections.defaultdict(collections.Counter)
for (comm, pid, t), st in samples(sys.stdin):
    if t > t_end_create: continue
    r = rooms_at(t)
    b = min(int(r * B / N), B-1)
    cnt[b][classify(comm, st, pid, t)] += 1
cats = collections.Counter()
for b in cnt: cats.update(cnt[b])
hdr = ['category'] + [f"{b*N//B}-{(b+1)*N//B}" for b in range(B)]
print('| ' + ' | '.join(hdr) + ' |')
print('|' + '---|' * len(hdr))
per = N / B
for c, _ in cats.most_common():
    print('| ' + c + ' | ' + ' | '.join(f"{cnt[b][c]/per:.2f}" for b in range(B)) + ' |')
print('| **total ms CPU per create** | ' + ' | '.join(f"**{sum(cnt[b].values())/per:.2f}**" for b in range(B)) + ' |')
