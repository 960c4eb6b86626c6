#!/usr/bin/env python3
# statsum.py CSV START_UPTIME T0 T1 DELIVERED_PER_SEC: sums perf stat -I intervals ending in [T0,T1] (uptime seconds)
import csv,collections,sys
f,start,t0,t1,dps=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]),float(sys.argv[4]),float(sys.argv[5])
s=collections.defaultdict(float); ts=set()
for row in csv.reader(l for l in open(f) if not l.startswith('#') and l.strip()):
    t=float(row[0])
    if t0-start<=t<=t1-start:
        ts.add(t)
        try: s[row[3]]+=float(row[1])
        except ValueError: pass
secs=len(ts)
d=dps*secs
print(f"window: {secs} one-second intervals (uptime {t0}..{t1}); deliveries assumed at the step's average {dps:.0f}/s -> {d:.0f}")
for k,v in s.items():
    if k=='task-clock':
        print(f"{k:32s} {v/1000:10.2f} s  = {v/1000/secs:.3f} cores, {v*1000/d:.2f} us/delivery")
    else:
        print(f"{k:32s} {v:10.0f}    = {v/secs:9.0f}/s, {v/d:.4f} per delivery")
if s.get('syscalls:sys_enter_writev'):
    print(f"deliveries per writev: {d/s['syscalls:sys_enter_writev']:.2f}")
