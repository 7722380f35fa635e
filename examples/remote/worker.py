#!/usr/bin/env python3
"""A remote offload worker in Python, standard library only.

Leases `shout` tasks from `offload serve` (OFFLOAD_SERVER, default
http://127.0.0.1:8750, with a `worker` token in OFFLOAD_TOKEN if the server
asks for one), runs them, keeps each lease alive with heartbeats, reports
progress, and stops a task whose abort was requested.
"""
import json
import os
import threading
import time
import urllib.error
import urllib.request

SERVER = os.environ.get("OFFLOAD_SERVER", "http://127.0.0.1:8750")
HEADERS = {"content-type": "application/json"}
if os.environ.get("OFFLOAD_TOKEN"):
    HEADERS["authorization"] = "Bearer " + os.environ["OFFLOAD_TOKEN"]


class LeaseLost(Exception):
    """The lease expired and the task went to another worker: drop it."""


class Aborted(Exception):
    """Someone asked the task to stop."""


def call(path, body):
    request = urllib.request.Request(SERVER + path, json.dumps(body).encode(), HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=90) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as e:
        if e.code == 409:
            raise LeaseLost() from e
        raise


def shout(task, progress):
    """The work: upper-cases `text`, in four steps over `seconds`."""
    for step in range(1, 5):
        time.sleep(task["input"].get("seconds", 1) / 4)
        progress(step * 25, f"step {step} of 4")
    return {"text": task["input"]["text"].upper()}


def run(task):
    path, token = f"/v1/tasks/{task['id']}", task["lease_token"]
    done = threading.Event()

    def heartbeats():
        while not done.wait(2):
            try:
                call(path + "/heartbeat", {"lease_token": token, "lease": "6s"})
            except Exception:
                return

    def progress(percent, message):
        answer = call(path + "/progress", {"lease_token": token, "percent": percent, "message": message})
        if answer["abort_requested"]:
            raise Aborted()

    threading.Thread(target=heartbeats, daemon=True).start()
    try:
        output = shout(task, progress)
        call(path + "/complete", {"lease_token": token, "output": output})
    except LeaseLost:
        pass
    except Aborted:
        call(path + "/fail", {"lease_token": token, "aborted": True})
    except Exception as e:
        call(path + "/fail", {"lease_token": token, "error": {"message": str(e)}})
    finally:
        done.set()


while True:
    lease = {"names": ["shout"], "wait": "30s", "lease": "6s", "worker_id": f"python-{os.getpid()}"}
    for task in call("/v1/lease", lease)["tasks"]:
        run(task)
