#!/usr/bin/env python3
# Blocks on instance/preempted with wait_for_change, as Google's samples wait for a metadata
# value, and runs the shutdown work once when the VM is preempted. SHUTDOWN is that command;
# it defaults to a line on stdout.
import os
import subprocess

import requests

URL = "http://169.254.169.254/computeMetadata/v1/instance/preempted"
HEADERS = {"Metadata-Flavor": "Google"}

last_etag = "0"
while True:
    response = requests.get(
        URL,
        params={"wait_for_change": True, "last_etag": last_etag},
        headers=HEADERS,
        timeout=330,
    )
    response.raise_for_status()
    last_etag = response.headers["ETag"]
    if response.text == "TRUE":
        print("preempted", flush=True)
        subprocess.run(os.environ.get("SHUTDOWN", "echo shutting down").split(), check=True)
        break
