#!/bin/bash
# rooms_reports.sh TAG EARLY_T0,T1 LATE_T0,T1 COUNT
tag=$1; early=$2; late=$3; n=$4
T=/work/prof-tmp/$tag; R=/work/wt-prof/bench/results/2026-12-03-profiles/rooms-$tag
mkdir -p $R
cp $T/chatbench.log $T/mon.log $T/pid.txt $R/; cp $T/perfstat-master-I.csv $R/ 2>/dev/null
cat $T/uptime-before.txt $T/uptime-after.txt > $R/uptime.txt
for w in early:$early late:$late; do
  name=${w%%:*}; win=${w#*:}
  { echo "# master process tree (perf record -p MASTER, children inherited), window $win (uptime s)"; 
    perf report -i $T/perf-master.data --stdio --no-children -g none --time $win --sort comm 2>/dev/null | grep -v "^#" | grep -v "^$" | head -8;
    perf report -i $T/perf-master.data --stdio --no-children -g none --time $win --percent-limit 0.4 2>/dev/null | grep -v "^$" | cut -c1-200 | head -60; } > $R/perf-master-$name-self.txt
  perf report -i $T/perf-master.data --stdio --children -g none --time $win --comm tokio-rt-worker --percent-limit 1.5 2>/dev/null | grep -v "^$" | cut -c1-200 | head -75 > $R/perf-master-$name-children-tokio-rt-worker.txt
done
perf script -i $T/perf-master.data -F comm,pid,time,ip,sym,dso 2>/dev/null | python3 /work/prof-tmp/rooms_classify.py $T/mon.log $n 10 > $R/cpu-per-create-by-tenth.md
if [ -f $T/perf-system.data ]; then
  { perf report -i $T/perf-system.data --stdio --no-children -g none --sort comm 2>/dev/null | grep -v "^$" | head -25;
    perf report -i $T/perf-system.data --stdio --no-children -g none --percent-limit 0.5 2>/dev/null | grep -v "^#" | grep -v "^$" | cut -c1-200 | head -60; } > $R/perf-system-10s.txt
fi
ls $R
