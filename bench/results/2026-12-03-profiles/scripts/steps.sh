#!/bin/bash
# steps.sh BENCH TAG [extra chatbench args]: one fanout or shootout run at 4000 clients with
# perf record (whole worker life, sliced later), perf stat -I 1000 on the worker.
set -u
bench=$1; tag=$2; shift 2
R=/work/wt-prof/bench/results/2026-12-03-profiles
T=/work/prof-tmp/$tag
mkdir -p $T
B=/work/wt-prof/target/profiling/chatbench
uptime > $T/uptime-before.txt
( $B $bench --steps 4000 --max 4000 --no-node --step-secs 30 --peers-dir /work/main/bench/peers \
    --json $R/$bench-$tag.json "$@" 2>&1 | while IFS= read -r l; do echo "$(awk '{print $1}' /proc/uptime) $l"; done > $T/chatbench.log ) &
bpid=$!
# wait for the room worker
for i in $(seq 1 200); do pid=$(pgrep -n -x chatroom) && break; sleep 0.1; done
echo "worker pid $pid" > $T/pid.txt
perf record -F 999 -g -k CLOCK_MONOTONIC -p $pid -o $T/perf.data 2> $T/perf-record.err &
rpid=$!
echo "perfstat start $(awk '{print $1}' /proc/uptime)" >> $T/pid.txt
perf stat -I 1000 -x, -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_sendto,syscalls:sys_enter_write -p $pid -o $T/perfstat-I.csv &
spid=$!
while kill -0 $pid 2>/dev/null; do
  echo "$(awk '{print $1}' /proc/uptime) fds=$(ls /proc/$pid/fd 2>/dev/null | wc -l) ticks=$(awk '{print $14" "$15}' /proc/$pid/stat 2>/dev/null)" >> $T/mon.log
  sleep 1
done
wait $bpid
kill -INT $rpid $spid 2>/dev/null; wait $rpid $spid
uptime > $T/uptime-after.txt
echo done
