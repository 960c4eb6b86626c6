#!/bin/bash
# fanout_reports.sh TAG T0 T1 STATSTART DPS: text reports of one fanout run's steady window
tag=$1; t0=$2; t1=$3; st=$4; dps=$5; name=${6:-fanout-$tag}
T=/work/prof-tmp/$tag; R=/work/wt-prof/bench/results/2026-12-03-profiles/$name
mkdir -p $R
cp $T/chatbench.log $T/mon.log $T/pid.txt $T/perfstat-I.csv $R/
cat $T/uptime-before.txt $T/uptime-after.txt > $R/uptime.txt
W="--time $t0,$t1"
perf report -i $T/perf.data --stdio --no-children -g none $W --percent-limit 0.3 2>/dev/null | grep -v "^$" | cut -c1-200 | head -75 > $R/perf-report-self.txt
perf report -i $T/perf.data --stdio --children -g none $W --percent-limit 2 2>/dev/null | grep -v "^$" | cut -c1-200 | head -75 > $R/perf-report-children.txt
perf report -i $T/perf.data --stdio --no-children -g none $W --sort dso 2>/dev/null | grep -v "^$" | head -20 > $R/perf-report-dso.txt
perf report -i $T/perf.data --stdio --no-children -G $W --percent-limit 3 2>/dev/null | grep -v "^$" | cut -c1-200 | head -120 > $R/perf-report-callers-top.txt
perf script -i $T/perf.data $W -F ip,sym,dso 2>/dev/null | python3 /work/prof-tmp/classify.py -v > $R/categories.txt
python3 /work/prof-tmp/statsum.py $T/perfstat-I.csv $st $t0 $t1 $dps > $R/perf-stat-window.txt
ls -la $R
