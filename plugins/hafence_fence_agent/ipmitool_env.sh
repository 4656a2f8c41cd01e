#!/bin/sh
# hafence: run ipmitool with the password from the environment, never from argv.
#
# The fence-agent bridge gives fence_ipmilan (and its aliases) no password, so the agent
# calls this script (as its ipmitool_path) with "-P ''"; the password is in
# $IPMI_PASSWORD. This script swaps that empty "-P ''" for ipmitool's "-E" (read the
# password from IPMI_PASSWORD) and runs the real ipmitool ($HAFENCE_IPMITOOL), so the
# password never shows in /proc/*/cmdline.
real=${HAFENCE_IPMITOOL:-/usr/bin/ipmitool}
n=$#
while [ "$n" -gt 0 ]; do
    arg=$1
    shift
    n=$((n - 1))
    if [ "$arg" = "-P" ] && [ "$n" -gt 0 ] && [ -z "$1" ]; then
        shift
        n=$((n - 1))
        set -- "$@" -E
    else
        set -- "$@" "$arg"
    fi
done
exec "$real" "$@"
