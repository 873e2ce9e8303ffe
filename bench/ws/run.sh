#!/bin/bash
# 5,000 WebSocket users on loopback, 2 worker processes, each user sending every 10 s.
set -u
B=${SQUALL_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
D=${OUT:-/tmp/squall-ws-bench}; mkdir -p $D; cp "$(dirname "$0")/ws5k.yaml" $D/
P=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$B/coordinator target --bind 127.0.0.1:$P > $D/target.log 2>&1 & TP=$!
sleep 1
/usr/bin/time -f "coordinator user %U s, sys %S s, maxrss %M KiB" -o $D/coord.time $B/coordinator -f $D/ws5k.yaml --host http://127.0.0.1:$P --workers 2 --bind 127.0.0.1:0 --out $D/out --headless > $D/coord.log 2>&1 & CP=$!
for i in $(seq 1 50); do grep -q 'listening on' $D/coord.log && break; sleep 0.2; done
M=$(grep -o 'listening on [0-9.:]*' $D/coord.log | head -1 | awk '{print $3}')
$B/worker --master $M --id b1 > $D/w1.log 2>&1 & W1=$!
$B/worker --master $M --id b2 > $D/w2.log 2>&1 & W2=$!
# idle RSS of a worker before the run starts
sleep 2
grep VmRSS /proc/$W1/status > $D/idle.txt

wait $CP
echo "coordinator exit $?" >> $D/coord.log

grep VmHWM /proc/$W1/status > $D/peak.txt
grep VmHWM /proc/$W2/status >> $D/peak.txt
awk '{print "worker1 cpu ticks", $14+$15}' /proc/$W1/stat >> $D/peak.txt
awk '{print "worker2 cpu ticks", $14+$15}' /proc/$W2/stat >> $D/peak.txt
grep -E 'VmHWM' /proc/$TP/status >> $D/peak.txt
curl -s http://127.0.0.1:$P/__squall/ws > $D/server.json
kill $W1 $W2 $TP
wait
