#!/bin/sh
# ipmi_sim chassis-control program for the fence tests (from shared/peers/ipmi/chassis_ctl.sh).
# ipmi_sim calls:  chassis_ctl.sh <state-file> get power | set power 0|1 | set reset 1 ...
# Every call is logged to <state-file>.log. If <state-file>.mode holds "stuck", a
# "set power 0" is accepted but ignored: a device that never reaches off.
STATE="$1"; op="$2"; shift 2
[ -n "$STATE" ] || { echo "No device given"; exit 1; }
echo "$op $*" >> "$STATE.log"
MODE="$(cat "$STATE.mode" 2>/dev/null)"
case "$op" in
  get)
    for p in "$@"; do
      case "$p" in
        power) echo "power:$(cat "$STATE" 2>/dev/null || echo 0)" ;;
        boot)  echo "boot:default" ;;
        *) echo "Invalid parameter: $p"; exit 1 ;;
      esac
    done ;;
  set)
    while [ $# -gt 0 ]; do
      p="$1"; v="$2"; shift 2
      case "$p" in
        power)
          if [ "$v" = 0 ] && [ "$MODE" = stuck ]; then :; else echo "$v" > "$STATE"; fi ;;
        reset)    : ;;
        shutdown) [ "$MODE" = stuck ] || echo 0 > "$STATE" ;;
        boot)     : ;;
        identify) shift ;;
        *) echo "Invalid parameter: $p"; exit 1 ;;
      esac
    done ;;
  check) exit 1 ;;
  *) echo "Unknown operation: $op"; exit 1 ;;
esac
exit 0
