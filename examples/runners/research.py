#!/usr/bin/env python3
"""An exec runner for offload: reads the task input (JSON) on stdin, reports
progress on stderr as `progress: <percent> <message>` lines, and prints its
output as JSON on stdout. Exit code 0 means success."""
import json
import sys
import time

task = json.load(sys.stdin)
topic = task.get("topic", "nothing in particular")
notes = []
for step, source in enumerate(["papers", "news", "forums"], start=1):
    time.sleep(0.2)  # stands in for a slow API call
    notes.append(f"{source}: 3 results about {topic}")
    print(f"progress: {step * 33} searched {source}", file=sys.stderr, flush=True)
json.dump({"topic": topic, "notes": notes}, sys.stdout)
