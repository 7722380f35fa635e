#!/bin/sh
# An exec runner in plain shell: the input is in $OFFLOAD_INPUT (and on stdin).
echo "progress: 50 resizing" >&2
printf '{"resized": %s, "attempt": %s}\n' "$OFFLOAD_INPUT" "$OFFLOAD_ATTEMPT"
