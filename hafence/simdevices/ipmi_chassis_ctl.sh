#!/bin/sh
# ipmi_sim external chassis-control program (lan.conf: chassis_control "PROGRAM STATE").
# ipmi_sim calls:  ipmi_chassis_ctl.sh STATE get power
#                  ipmi_chassis_ctl.sh STATE set power 0|1   (also: reset 1, shutdown 1, boot X, identify I F)
# STATE is the power-state file (holding 0 or 1). Every call is appended to STATE.log as
# "OP ARGS..." so a test can assert on what the BMC was asked to do. If STATE.mode holds
# "stuck", power-off requests are accepted but ignored: a target that never reaches off.
# If STATE.off-hook is executable it runs at each power-off, before STATE reads off and
# before the BMC answers (what cutting the power does to the machine at once: hafence lab
# kills the node there).
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
          # the machine dies first, then the state reads off (nobody sees "off" while it
          # still runs); a new file renamed over the old: never seen empty mid-write
          if [ "$v" = 0 ] && [ "$MODE" != stuck ] && [ -x "$STATE.off-hook" ]; then "$STATE.off-hook"; fi
          if [ "$v" = 0 ] && [ "$MODE" = stuck ]; then :; else echo "$v" > "$STATE.new" && mv -f "$STATE.new" "$STATE"; fi ;;
        reset)    : ;;                       # pulse: power stays as it is
        shutdown) [ "$MODE" = stuck ] || { [ -x "$STATE.off-hook" ] && "$STATE.off-hook"
                    echo 0 > "$STATE.new" && mv -f "$STATE.new" "$STATE"; } ;;  # soft off: immediate
        boot)     : ;;
        identify) shift ;;                   # identify takes two values (interval force)
        *) echo "Invalid parameter: $p"; exit 1 ;;
      esac
    done ;;
  check) exit 1 ;;
  *) echo "Unknown operation: $op"; exit 1 ;;
esac
exit 0
