#!/usr/bin/env bash
# Issue 24 item 7 screening: every depth schedule beside Pre-LN, lockstep, 45 training minutes per arm, 1 seed,
# on all offline corpora together (wiki-vital + bbc-news). About 4 hours on 2 idle cores; run nothing else.
# Resumable: run it again and it continues with --resume (a kill loses at most --save-every steps per arm).
# It runs the code in /work/exp/code: make it once with
#   mkdir -p /work/exp/code && git archive HEAD | tar -x -C /work/exp/code && git rev-parse HEAD > /work/exp/code/COMMIT
# so that edits to the working tree do not touch a running experiment.
set -u
cd /work/exp
export PLDROP_CACHE=/work/exp/cache PYTHONPATH=/work/exp/code/src TOKENIZERS_PARALLELISM=false
TC=$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null); [ -n "$TC" ] && export LD_PRELOAD=$TC
OUT=/work/exp/screen-45min-s0
( while true; do echo "$(date -u +%FT%TZ) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 60; done ) >> load.log &
LOGGER=$!
if [ -d "$OUT" ]; then
  echo "== resume $(date -u)" >> console.log
  /work/main/.venv/bin/python -m pldrop compare --resume --out "$OUT" --no-progress >> console.log 2>&1
else
  echo "== start $(date -u) code $(cat code/COMMIT 2>/dev/null)" >> console.log
  /work/main/.venv/bin/python -m pldrop compare --arms preln pld pld-cooldown sd-constant pld-anneal \
    --corpus wiki-vital --corpus bbc-news --max-minutes 45 --eval-every 250 --save-every 1000 --no-progress \
    --out "$OUT" >> console.log 2>&1
fi
echo "== exit $? $(date -u)" >> console.log
kill $LOGGER
