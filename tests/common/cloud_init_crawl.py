"""Finds the EC2 datasource as cloud-init does at boot, and reports what it saw.

Run by tests/common/cloud_init.rs with Debian's /usr/bin/python3 and PYTHONPATH pointing into
the unpacked cloud-init package (scripts/test.sh fetches it; nothing is installed on the host).

The datasource is found through `cloudinit.sources.find_source`, the call cloud-init's network
stage makes (`stages.Init._get_data_source`), restricted to `datasource_list: [Ec2]`: it builds
`DataSourceEc2`, calls `update_metadata_if_supported([BOOT_NEW_INSTANCE])`, which crawls the
metadata service (IMDSv2 token, `user-data`, `meta-data/`, `dynamic/instance-identity/`) and
calls `persist_instance_data()`, which writes `instance-data.json` and
`instance-data-sensitive.json` into `<DIR>/run` (cloud-init's /run/cloud-init) itself.

One thing is not cloud-init's own: how it tells it is on EC2. At boot it reads the DMI tables
(`/sys/class/dmi/id`, skipped altogether inside a container, which the test machines are), and
only a platform it identifies as AWS gets the IMDSv2 token and the identity document's
instance id and region; an unidentified one falls back to IMDSv1. `--platform ec2` (the
default) replaces the one function that reads the hardware, `_collect_platform_data`, with the
values a Nitro instance's DMI holds, so cloud-init's own `identify_aws` decides "aws".
`--platform detect` leaves the host's hardware to decide (on these machines: "unknown").

Prints one JSON object on stdout: the datasource's view (cloud name, instance id, region,
availability zone, the user-data it read as base64, whether it used an IMDSv2 token) and where
the files are. Logs (cloud-init's own, at DEBUG) go to stderr. Exits 1 when no datasource was
found.
"""

import argparse
import base64
import json
import os
import sys

from cloudinit import distros, helpers, sources
from cloudinit import log as ci_logging
from cloudinit.reporting import events
from cloudinit.sources import DataSourceEc2

# What cloud-init reads from DMI on a Nitro instance (lower-cased as it does): a system uuid
# starting with "ec2" that equals the serial number is what `identify_aws` accepts.
NITRO_PLATFORM = {
    "uuid_source": "dmi",
    "uuid": "ec2e1916-9099-7caf-fd21-012345abcdef",
    "serial": "ec2e1916-9099-7caf-fd21-012345abcdef",
    "asset_tag": "i-0123456789abcdef0",
    "vendor": "amazon ec2",
    "product_name": "t3.micro",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="private directory for cloud-init's files")
    parser.add_argument("--url", default="http://169.254.169.254", help="metadata service")
    parser.add_argument("--platform", choices=["ec2", "detect"], default="ec2")
    parser.add_argument("--max-wait", type=int, default=20, help="seconds to find the service")
    args = parser.parse_args()

    ci_logging.setupBasicLogging()
    if args.platform == "ec2":
        DataSourceEc2._collect_platform_data = lambda: dict(NITRO_PLATFORM)

    run_dir = os.path.join(args.dir, "run")
    paths = helpers.Paths(
        {"cloud_dir": os.path.join(args.dir, "var-lib-cloud"), "run_dir": run_dir}
    )
    # What /etc/cloud/cloud.cfg would say, narrowed to this service: only the Ec2 datasource,
    # only this URL (cloud-init also tries [fd00:ec2::254] and instance-data.:8773), bounded waits.
    sys_cfg = {
        "datasource_list": ["Ec2"],
        "datasource": {
            "Ec2": {
                "metadata_urls": [args.url],
                "max_wait": args.max_wait,
                "timeout": 5,
            }
        },
    }
    distro = distros.fetch("debian")("debian", {}, paths)
    reporter = events.ReportEventStack(
        name="imds-tun-test", description="cloud-init crawl", reporting_enabled=False
    )
    try:
        datasource, name = sources.find_source(
            sys_cfg,
            distro,
            paths,
            [sources.DEP_FILESYSTEM, sources.DEP_NETWORK],
            ["Ec2"],
            ["", "cloudinit.sources"],
            reporter,
        )
    except sources.DataSourceNotFoundException as error:
        print(f"cloud_init_crawl: {error}", file=sys.stderr)
        return 1

    userdata = datasource.get_userdata_raw() or b""
    if isinstance(userdata, str):
        userdata = userdata.encode()
    json.dump(
        {
            "datasource": name,
            "cloud_name": datasource.cloud_name,
            "platform_type": datasource.platform_type,
            "instance_id": datasource.get_instance_id(),
            "region": datasource.region,
            "availability_zone": datasource.availability_zone,
            "user_data_base64": base64.b64encode(userdata).decode(),
            "metadata_address": datasource.metadata_address,
            "used_imdsv2_token": bool(datasource._api_token),
            "instance_data": paths.get_runpath("instance_data"),
            "instance_data_sensitive": paths.get_runpath("instance_data_sensitive"),
            "cloud_init_version": _version(),
        },
        sys.stdout,
        indent=2,
    )
    print()
    return 0


def _version():
    from cloudinit import version

    return version.version_string()


if __name__ == "__main__":
    sys.exit(main())
