#!/usr/bin/env python3
"""classify.py: reads `perf script -F time,ip,sym,dso` (callchains) on stdin
and prints the share of samples per cost category (each sample counted once,
first matching rule wins; the rules look at the whole stack)."""
import sys, re, collections

def samples(f):
    stack = []
    for line in f:
        line = line.rstrip('\n')
        if not line.strip():
            if stack: yield stack
            stack = []
            continue
        if line.startswith((' ', '\t')):
            m = re.match(r'\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$', line)
            if m: stack.append((m.group(1), m.group(2)))
        else:
            stack = []
    if stack: yield stack

def has(stack, pat):
    return any(re.search(pat, s) for s, _ in stack)

RULES_SYSCALL = [
    ('writev: loopback receive path run in softirq (receiver-side TCP, charged to sender)', lambda st: has(st, r'^(do_writev|__GI___writev|__x64_sys_writev)') and has(st, r'^(net_rx_action|__netif_receive_skb|process_backlog)')),
    ('writev: TCP send path (tcp_sendmsg, skb alloc/copy, ip output, syscall entry)', lambda st: has(st, r'^(do_writev|__GI___writev|__x64_sys_writev|writev)')),
    ('epoll_wait (and the scheduler switch inside it)', lambda st: has(st, r'epoll_wait|ep_poll')),
    ('recvfrom/read (client frames in)', lambda st: has(st, r'recvfrom|__x64_sys_read|tcp_recvmsg')),
    ('other syscalls', lambda st: has(st, r'^(do_syscall_64|entry_SYSCALL)')),
]
def user_rule(st):
    leaf = st[0][0]
    dso = st[0][1]
    if 'kernel' in dso:
        return 'kernel, not in a syscall (interrupts, page faults, return to user)'
    if re.search(r'malloc|free|realloc|calloc|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::alloc|_int_|tcache|cfree|RawVec.*grow|do_reserve_and_handle', leaf):
        return 'user: memory allocation (malloc/free/realloc)'
    if re.search(r'serde_json|serde::|itoa|ryu|format_escaped|escape', leaf):
        return 'user: JSON (serde_json)'
    if re.search(r'tungstenite|wire::encode|wire::frame|Encoded|mask|unmask|apply_mask|FrameHeader|wire::Reader|wire::Ws', leaf):
        return 'user: WebSocket framing/parsing'
    if re.search(r'Room::broadcast', leaf):
        return 'user: Room::broadcast loop (self: iterate users/conns, Outbound::send inlined)'
    if re.search(r'mpsc|chan::|list::Tx|list::Rx|semaphore', leaf):
        return 'user: tokio mpsc channels (per-connection queues)'
    if re.search(r'cancellation_token|WaitForCancellation|notify|Notified', leaf):
        return 'user: CancellationToken / Notify polls'
    if re.search(r'tokio::runtime|task::|waker|Waker|wake|scheduler|run_task|poll_ready|Registration|ScheduledIo|io::driver|yield_now|coop|context::|budget', leaf):
        return 'user: tokio runtime (scheduling, wakers, IO readiness)'
    if re.search(r'write_loop|Pending::write|poll_write|TokioIo|IoSlice|VecDeque|write_vectored', leaf):
        return 'user: write_loop/Pending::write/poll_write_vectored glue'
    if re.search(r'bytes::|shared_drop|shared_clone|promotable|Bytes', leaf):
        return 'user: Bytes refcounts (clone/drop of shared frames)'
    if re.search(r'memcpy|memmove|memset|memcmp|__memcpy|__memmove', leaf):
        return 'user: memcpy/memmove'
    if re.search(r'hash|Hash|sip|hashbrown', leaf):
        return 'user: hashing/hash maps'
    return 'user: other'

def classify(st):
    for name, f in RULES_SYSCALL:
        if f(st): return name
    return user_rule(st)

c = collections.Counter(); leaves = collections.defaultdict(collections.Counter)
n = 0
for st in samples(sys.stdin):
    k = classify(st); c[k] += 1; n += 1
    leaves[k][st[0][0][:80]] += 1
print(f"samples: {n}")
for k, v in c.most_common():
    print(f"{100*v/n:6.2f}%  {k}")
if '-v' in sys.argv:
    for k, v in c.most_common():
        print(f"\n== {k}")
        for s, m in leaves[k].most_common(6):
            print(f"   {100*m/n:5.2f}% {s}")
