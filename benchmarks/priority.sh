#!/usr/bin/env bash
# Run a command with its own CPU share on a machine where other sessions keep the cores busy:
#
#     setsid --wait benchmarks/priority.sh .venv/bin/python benchmarks/mapping.py
#
# Linux autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled = 1) shares the CPU evenly between
# sessions, whatever the processes' own nice values, so a `nice 19` job started in another session still takes
# half of the cores, and torch's intra-op threads then stall at every barrier. `setsid` gives the command its own
# autogroup; this script lowers that autogroup's nice to -10 (needs root or CAP_SYS_NICE; without it the command
# runs as is, with a note). Other sessions' jobs are not touched: they only yield while this command runs.
if ! echo -10 > /proc/self/autogroup 2>/dev/null; then
    echo "priority.sh: could not raise the autogroup priority (needs root or CAP_SYS_NICE); running as is" >&2
fi
exec "$@"
