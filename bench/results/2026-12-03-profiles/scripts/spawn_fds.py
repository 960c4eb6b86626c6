#!/usr/bin/env python3
"""spawn_fds.py: how the cost of posix_spawn + exec of /bin/true grows with
the number of open (close-on-exec) descriptors in the parent. Unix socket
pairs stand in for the master's per-room IPC sockets."""
import os, socket, time, resource, statistics as st
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
def spawn_ms(reps=200):
    xs = []
    for _ in range(reps):
        t = time.perf_counter()
        pid = os.posix_spawn('/bin/true', ['true'], {})
        os.waitpid(pid, 0)
        xs.append((time.perf_counter() - t) * 1e3)
    return st.median(xs)
print("| open fds (CLOEXEC) | posix_spawn+exec+wait of /bin/true, median ms |\n|---|---|")
for target in (0, 1000, 2000, 3000, 4000, 6000, 8000):
    while len(socks) < target:
        socks.extend(socket.socketpair())
    print(f"| {len(os.listdir('/proc/self/fd'))} | {spawn_ms():.3f} |")
