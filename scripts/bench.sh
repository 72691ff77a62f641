#!/usr/bin/env bash
# Every benchmark of tasklane in one go, against the local RabbitMQ:
#   1. the end-to-end bench (`e2e`): raw amqprs and tasklane side by side in
#      one run (consume, intake, confirmed publish vs result path, full
#      pipe, handoff latency at idle and at 1,000 tasks/s, the disk's floor),
#      a table with tasklane/raw ratios, and tasklane's full pipe on a
#      quorum queue of the default node and of the 3-node cluster of
#      scripts/ensure-cluster.sh (what replication costs), JSON in
#      target/bench-e2e.json;
#   2. peak RSS while 1,000,000 tasks of 256 B sit in the spool, and while
#      10,000 tasks of 64 KiB do (`e2e rss`, during intake and after a
#      reopen), JSON in target/bench-rss.json and target/bench-rss-64k.json;
#   3. the criterion benches: core's handle/poll cost per task, and the
#      LMDB spool's group commit at several batch sizes.
# Everything printed also goes to target/bench/summary.md, with the load
# average at the start of each part (figures on a shared machine are noise;
# compare the ratios of one run).
#
#   scripts/bench.sh                      # everything (about 10 minutes)
#   scripts/bench.sh --tasks 5000 --rounds 1   # extra arguments go to e2e
#
# Environment: RSS_TASKS (default 1000000; 0 skips the small-task RSS run),
# RSS_BIG_TASKS (default 10000 tasks of 64 KiB; 0 skips that run),
# CRITERION=0 skips the criterion benches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rabbitmq.sh
bash scripts/ensure-cluster.sh

out=target/bench
mkdir -p "$out"
summary="$out/summary.md"
rss_tasks="${RSS_TASKS:-1000000}"
rss_big_tasks="${RSS_BIG_TASKS:-10000}"

load() {
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ))"
}

cargo build --release -p tasklane-benches --bin e2e
e2e=target/release/e2e

{
    echo "## End to end"
    echo
    load
    echo
} >"$summary"
"$e2e" "$@" | tee -a "$summary"

if [ "$rss_tasks" != 0 ]; then
    {
        echo
        echo "## Peak RSS with $rss_tasks tasks in the spool"
        echo
        load
        echo
    } >>"$summary"
    "$e2e" rss --tasks "$rss_tasks" | tee -a "$summary"
fi

if [ "$rss_big_tasks" != 0 ]; then
    {
        echo
        echo "## Peak RSS with $rss_big_tasks tasks of 64 KiB in the spool"
        echo
        load
        echo
    } >>"$summary"
    "$e2e" rss --tasks "$rss_big_tasks" --size 65536 --json target/bench-rss-64k.json | tee -a "$summary"
fi

if [ "${CRITERION:-1}" != 0 ]; then
    {
        echo
        echo "## Criterion"
        echo
        load
        echo
        echo '```text'
    } >>"$summary"
    # The benchmark name, then its time and throughput lines (not the
    # change since the previous run, the lines with percentages).
    cargo bench -p tasklane-benches --bench core --bench spool 2>/dev/null |
        tee "$out/criterion.txt" |
        awk '/^[a-z_]+\/[a-z_]+\/[0-9]+/ { name = $1 } /time:|thrpt:/ && !/%/ { print name, $0 }' |
        tee -a "$summary"
    echo '```' >>"$summary"
fi
echo "summary written to $summary" >&2
