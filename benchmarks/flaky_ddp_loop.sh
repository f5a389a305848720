#!/bin/bash
# 10 consecutive runs of the multi-process DDP tests while two CPU burners run (issue 9 item 8)
cd /work/main; . .venv/bin/activate
python -c "while True: pass" & B1=$!
python -c "while True: pass" & B2=$!
trap "kill $B1 $B2 2>/dev/null" EXIT
pass=0
for i in $(seq 1 10); do
  start=$(date +%s)
  if timeout 400 python -m pytest tests/distributed/test_ddp.py tests/distributed/test_comm_hook.py tests/distributed/test_teardown.py -m multiprocess -q -p no:cacheprovider > /tmp/lead/flaky-run$i.log 2>&1; then
    pass=$((pass+1)); res=PASS
  else
    res=FAIL
  fi
  echo "run $i: $res in $(( $(date +%s) - start )) s; $(tail -1 /tmp/lead/flaky-run$i.log); load $(cut -d' ' -f1-3 /proc/loadavg)"
  [ $res = FAIL ] && break
done
echo "consecutive passes: $pass"
