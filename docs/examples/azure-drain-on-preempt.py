#!/usr/bin/env python3
# Polls Azure's Scheduled Events every second (api-version 2020-07-01), as Azure's
# documentation suggests; when a new document announces a Preempt or Terminate, drains this
# VM once, approves the event (StartRequests) so that it starts now instead of at its
# NotBefore, and exits. DRAIN is the command that drains this VM; it defaults to a line on
# stdout.
import json
import os
import subprocess
import time

import requests

METADATA_URL = "http://169.254.169.254/metadata/scheduledevents"
HEADERS = {"Metadata": "true"}
PARAMS = {"api-version": "2020-07-01"}


def get_scheduled_events():
    response = requests.get(METADATA_URL, headers=HEADERS, params=PARAMS, timeout=5)
    response.raise_for_status()
    return response.json()


def confirm_scheduled_event(event_id):
    payload = json.dumps({"StartRequests": [{"EventId": event_id}]})
    response = requests.post(
        METADATA_URL, headers=HEADERS, params=PARAMS, data=payload, timeout=5
    )
    return response.status_code


last_incarnation = None
while True:
    document = get_scheduled_events()
    if document["DocumentIncarnation"] != last_incarnation:
        last_incarnation = document["DocumentIncarnation"]
        for event in document["Events"]:
            if event["EventType"] in ("Preempt", "Terminate") and event["EventStatus"] == "Scheduled":
                print(f"{event['EventType']} {event['EventId']}, not before {event['NotBefore']}", flush=True)
                subprocess.run(os.environ.get("DRAIN", "echo draining").split(), check=True)
                print(f"approved: {confirm_scheduled_event(event['EventId'])}", flush=True)
                raise SystemExit(0)
    time.sleep(float(os.environ.get("POLL_SECONDS", "1")))
