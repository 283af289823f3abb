#!/bin/sh
# Polls for a spot interruption notice every 5 s (IMDSv2) and drains once when one appears.
# DRAIN is the command that drains this node; it defaults to a line on stdout.
set -eu
IMDS=http://169.254.169.254
DRAIN=${DRAIN:-"echo draining"}
while :; do
    token=$(curl -sf -X PUT "$IMDS/latest/api/token" \
        -H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || token=
    if notice=$(curl -sf -H "X-aws-ec2-metadata-token: $token" \
        "$IMDS/latest/meta-data/spot/instance-action"); then
        echo "spot interruption: $notice"
        $DRAIN
        exit 0
    fi
    sleep "${POLL_SECONDS:-5}"
done
