#!/usr/bin/env bash
# Start the plain Ray Tune baseline in the background on the device machine (it can run
# longer than one device command), then wait for it up to $1 seconds. Call again to keep
# waiting; results land in /root/res.
set -u
mkdir -p /root/res
if ! pgrep -f "sweep_throughput.py --only plain" >/dev/null && [ ! -f /root/res/done ]; then
  (setsid nohup bash -c "python bench/sweep_throughput.py --only plain --epochs ${EPOCHS:-10} --out /root/res > /root/res/plain.log 2>&1; touch /root/res/done" &)
  sleep 2
fi
end=$((SECONDS + ${1:-500}))
while [ $SECONDS -lt $end ] && [ ! -f /root/res/done ]; do sleep 5; done
tail -5 /root/res/plain.log; ls /root/res
cp /root/res/* "$OUT"/ 2>/dev/null || true
