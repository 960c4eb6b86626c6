#!/bin/bash
# rooms.sh TAG COUNT: chatbench rooms with perf record on the master (whole
# creation, sliced later), perf stat -I on the master, a system-wide perf
# record for 10 s once half the rooms exist, and a per-second log of the
# room-process count.
set -u
tag=$1; n=$2; shift 2
R=/work/wt-prof/bench/results/2026-12-03-profiles
T=/work/prof-tmp/$tag
mkdir -p $T
B=/work/wt-prof/target/profiling/chatbench
up() { awk '{print $1}' /proc/uptime; }
uptime > $T/uptime-before.txt
( $B rooms --count $n --idle-secs 5 --no-node --peers-dir /work/main/bench/peers \
    --json $R/rooms-$tag.json "$@" 2>&1 | while IFS= read -r l; do echo "$(up) $l"; done > $T/chatbench.log ) &
bpid=$!
for i in $(seq 1 300); do cb=$(pgrep -n -f "profiling/chatbench rooms") && mpid=$(pgrep -P $cb -x chatserver) && break; sleep 0.1; done
echo "master pid $mpid" > $T/pid.txt
echo "perf start $(up)" >> $T/pid.txt
perf record -F 999 -g -k CLOCK_MONOTONIC -p $mpid -o $T/perf-master.data 2> $T/perf-record.err &
rpid=$!
perf record -e syscalls:sys_enter_execve,sched:sched_process_exec,syscalls:sys_enter_clone3,syscalls:sys_exit_clone3 -k CLOCK_MONOTONIC -p $mpid -o $T/perf-exec.data 2> $T/perf-exec.err &
epid=$!
perf stat -I 1000 -x, -e task-clock,context-switches,page-faults -p $mpid -o $T/perfstat-master-I.csv &
spid=$!
sys_done=0
while kill -0 $mpid 2>/dev/null; do
  f=$(ls /proc/$mpid/fd 2>/dev/null | wc -l); c=$(( (f-12)/2 )); [ $c -lt 0 ] && c=0
  echo "$(up) rooms~$c master_threads=$(ls /proc/$mpid/task 2>/dev/null | wc -l) master_fds=$(ls /proc/$mpid/fd 2>/dev/null | wc -l) master_rss_kb=$(awk '/VmRSS/{print $2}' /proc/$mpid/status 2>/dev/null) master_ticks=$(awk '{print $14" "$15}' /proc/$mpid/stat 2>/dev/null)" >> $T/mon.log
  if [ $sys_done = 0 ] && [ "$c" -ge $((n*6/10)) ]; then
    sys_done=1
    echo "system-wide start $(up) rooms=$c" >> $T/pid.txt
    w=$(pgrep -n -P $mpid); echo "newest worker $w fds: $(ls /proc/$w/fd | wc -l): $(ls -l /proc/$w/fd | tail -n +2 | awk '{print $NF}' | sed 's/[0-9]\+/N/g' | sort | uniq -c | tr '\n' ';')" >> $T/pid.txt
    ( perf record -a -g -F 499 -k CLOCK_MONOTONIC -o $T/perf-system.data -- sleep 10 2> $T/perf-system.err; echo "system-wide end $(up)" >> $T/pid.txt ) &
  fi
  sleep 1
done
wait $bpid
kill -INT $rpid $spid $epid 2>/dev/null; wait $rpid $spid $epid
uptime > $T/uptime-after.txt
echo done
