//! `--pass-through RULE` (issue 28) against a real kernel: a "cloud" namespace plays the
//! provider, joined to a "vm" namespace by a veth pair; 169.254.169.254 on the cloud side is a
//! second imds-tun (`--no-tun --listen`, IMDSv2 required, its own instance id, tag, zone,
//! role name and Azure VM name), and "vm" reaches it by a host route through the veth with a
//! gateway and metric 100, as Azure's DHCP gives its VMs. In "vm", imds-tun with
//! `--pass-through` claims the address with its TUN and answers what the rules pass from the
//! cloud, over a socket bound to the veth, and the rest itself.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::{self, ImdsTun, Namespace, text};

/// The cloud's answers, distinct from every default of the VM's imds-tun.
const CLOUD_ID: &str = "i-0c10d0000000000c1";
const CLOUD_ZONE: &str = "eu-west-1b";
const CLOUD_ROLE: &str = "cloud-role";
const CLOUD_VM_NAME: &str = "cloud-vm";
const CLOUD_TAG: &str = "from-the-cloud";
const CLOUD_PROJECT: &str = "cloud-project";
const VM_ID: &str = "i-0000000000000b0b0";
const VM_VM_NAME: &str = "local-vm";

/// The two namespaces and the cloud's service; the cloud's imds-tun is `service`.
struct World {
    /// The cloud (also where its `ctl` runs); dropping it deletes the namespace.
    _cloud: Namespace,
    vm: Namespace,
    service: Option<ImdsTun>,
}

/// Makes the cloud and the VM, joins them (cloud 10.77.0.1/24, vm 10.77.0.2/24), starts the
/// cloud's service and routes 169.254.169.254 from "vm" to it. `None` (after a skip notice,
/// a failure under CI) when namespaces cannot be made.
fn world(test: &str) -> Option<World> {
    world_routed(
        test,
        &[
            "169.254.169.254/32",
            "via",
            "10.77.0.1",
            "dev",
            "vguest",
            "metric",
            "100",
        ],
    )
}

/// [`world`] with "vm"'s route to the cloud's service given as `ip route add ROUTE`.
fn world_routed(test: &str, route: &[&str]) -> Option<World> {
    let cloud = Namespace::for_test(test)?;
    let vm = Namespace::for_test(test)?;
    cloud.link_guest(&vm, "10.77.0.1", "10.77.0.2");
    cloud.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
    let mut add = vec!["route", "add"];
    add.extend_from_slice(route);
    vm.ip(&add);
    let service = start_cloud(&cloud);
    Some(World {
        _cloud: cloud,
        vm,
        service: Some(service),
    })
}

fn start_cloud(cloud: &Namespace) -> ImdsTun {
    common::start(
        cloud,
        &[
            "--no-tun",
            "--listen",
            "169.254.169.254:80",
            "--insecure-listen-without-token",
            "--imdsv2",
            "required",
            "--instance-id",
            CLOUD_ID,
            "--region",
            "eu-west-1",
            "--availability-zone",
            CLOUD_ZONE,
            "--role-name",
            CLOUD_ROLE,
            "--tag",
            &format!("Name={CLOUD_TAG}"),
            "--azure-vm-name",
            CLOUD_VM_NAME,
            "--gcp-project",
            CLOUD_PROJECT,
            "--mock-credentials",
        ],
    )
}

/// Starts the VM's imds-tun with `rules` (each after `--pass-through`) and `extra` flags.
fn start_vm(vm: &Namespace, rules: &[&str], extra: &[&str]) -> ImdsTun {
    let mut args: Vec<&str> = vec![
        "--instance-id",
        VM_ID,
        "--azure-vm-name",
        VM_VM_NAME,
        "--mock-credentials",
    ];
    for rule in rules {
        args.extend(["--pass-through", rule]);
    }
    args.extend_from_slice(extra);
    common::start(vm, &args)
}

/// `curl` in `namespace`: the status and the body.
fn curl(namespace: &Namespace, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let url = format!("http://169.254.169.254{path}");
    let mut command = vec![
        "curl",
        "-sS",
        "--max-time",
        "8",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    for header in headers {
        command.extend(["-H", header]);
    }
    command.push(&url);
    let output = namespace.exec(&command);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {path} in {}: no status ({})",
            namespace.name(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (status, body.to_owned())
}

/// An IMDSv2 token from whoever answers 169.254.169.254 in `namespace`.
fn imds_token(namespace: &Namespace) -> String {
    let (status, token) = curl(
        namespace,
        "PUT",
        "/latest/api/token",
        &["X-aws-ec2-metadata-token-ttl-seconds: 300"],
    );
    assert_eq!(status, 200, "token: {token}");
    token
}

fn get(namespace: &Namespace, path: &str, token: &str) -> (u16, String) {
    curl(
        namespace,
        "GET",
        path,
        &[&format!("X-aws-ec2-metadata-token: {token}")],
    )
}

const AZURE_NAME: &str = "/metadata/instance/compute/name?api-version=2021-02-01&format=text";

fn azure_name(namespace: &Namespace) -> (u16, String) {
    curl(namespace, "GET", AZURE_NAME, &["Metadata: true"])
}

#[test]
fn without_imds_tun_the_vm_reaches_the_cloud_s_service() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    let token = imds_token(&world.vm);
    assert_eq!(
        get(&world.vm, "/latest/meta-data/instance-id", &token),
        (200, CLOUD_ID.to_owned())
    );
    assert_eq!(azure_name(&world.vm), (200, CLOUD_VM_NAME.to_owned()));
}

#[test]
fn azure_and_a_prefix_pass_the_rest_is_local_with_imds_tun_s_token_on_both() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    // As an unprivileged user after start: the bound sockets need no capability (Linux 5.7+).
    let vm = start_vm(
        &world.vm,
        &["azure", "/latest/meta-data/placement/"],
        &["--user", "nobody"],
    );
    vm.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("--pass-through: the real metadata service is 169.254.169.254 via interface vguest, next hop 10.77.0.1")
    });
    // The token comes from the VM's imds-tun: the cloud requires its own, so a client token
    // forwarded as it is would be refused there (401).
    let token = imds_token(&world.vm);
    assert_eq!(
        get(&world.vm, "/latest/meta-data/instance-id", &token),
        (200, VM_ID.to_owned())
    );
    assert_eq!(
        get(
            &world.vm,
            "/latest/meta-data/placement/availability-zone",
            &token
        ),
        (200, CLOUD_ZONE.to_owned())
    );
    // A token imds-tun never issued is refused here, before anything goes to the cloud.
    assert_eq!(
        get(
            &world.vm,
            "/latest/meta-data/placement/availability-zone",
            "not-a-token"
        )
        .0,
        401
    );
    // Credentials are the VM's.
    let (status, roles) = get(
        &world.vm,
        "/latest/meta-data/iam/security-credentials/",
        &token,
    );
    assert_eq!(status, 200);
    assert_ne!(roles, CLOUD_ROLE);
    assert_eq!(azure_name(&world.vm), (200, CLOUD_VM_NAME.to_owned()));
    // What no rule names is the VM's: it has no tags (404), the cloud has one.
    let (status, _) = get(&world.vm, "/latest/meta-data/tags/instance/Name", &token);
    assert_eq!(status, 404);
    // Passing kept no capability: after the drop every set is empty.
    let status = std::fs::read_to_string(format!("/proc/{}/status", vm.pid())).expect("status");
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        let line = status
            .lines()
            .find(|line| line.starts_with(set))
            .unwrap_or_else(|| panic!("no {set} in {status}"));
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    drop(vm);
}

#[test]
fn ec2_passes_every_ec2_path_but_credentials() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    let _vm = start_vm(&world.vm, &["ec2"], &[]);
    let token = imds_token(&world.vm);
    for (path, wanted) in [
        ("/latest/meta-data/instance-id", CLOUD_ID),
        ("/latest/meta-data/placement/availability-zone", CLOUD_ZONE),
        ("/latest/meta-data/tags/instance/Name", CLOUD_TAG),
    ] {
        assert_eq!(
            get(&world.vm, path, &token),
            (200, wanted.to_owned()),
            "{path}"
        );
    }
    // Tokenless (IMDSv1) is the VM's policy (optional), not the cloud's (required).
    assert_eq!(
        curl(&world.vm, "GET", "/latest/meta-data/instance-id", &[]),
        (200, CLOUD_ID.to_owned())
    );
    let (status, roles) = get(
        &world.vm,
        "/latest/meta-data/iam/security-credentials/",
        &token,
    );
    assert_eq!(status, 200);
    assert_eq!(roles, "imds-tun");
    let (status, info) = get(&world.vm, "/latest/meta-data/iam/info", &token);
    assert_eq!(status, 200);
    assert!(!info.contains(CLOUD_ROLE), "{info}");
    // Azure is not passed by `ec2`.
    assert_eq!(azure_name(&world.vm), (200, VM_VM_NAME.to_owned()));
}

#[test]
fn with_the_cloud_stopped_passed_paths_fail_fast_and_local_ones_keep_working() {
    let Some(mut world) = world(crate::test_name!()) else {
        return;
    };
    let vm = start_vm(&world.vm, &["ec2"], &[]);
    let token = imds_token(&world.vm);
    assert_eq!(
        get(&world.vm, "/latest/meta-data/instance-id", &token).0,
        200
    );
    let mut service = world.service.take().expect("the cloud's service");
    service.signal(Signal::SIGTERM);
    service.wait_exit(Duration::from_secs(10));
    let started = Instant::now();
    let (status, body) = get(&world.vm, "/latest/meta-data/instance-id", &token);
    assert!(status == 502 || status == 504, "{status} {body}");
    assert!(
        body.starts_with("imds-tun: the real metadata service "),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "took {:?}",
        started.elapsed()
    );
    assert!(body.starts_with("imds-tun: "), "{body}");
    let (status, _) = get(
        &world.vm,
        "/latest/meta-data/iam/security-credentials/",
        &token,
    );
    assert_eq!(status, 200);
    vm.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("169.254.169.254") && line.contains("answered GET")
    });
}

#[test]
fn after_sigterm_or_sigkill_the_vm_reaches_the_cloud_directly_again() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let mut vm = start_vm(&world.vm, &["azure"], &[]);
        let token = imds_token(&world.vm);
        assert_eq!(
            get(&world.vm, "/latest/meta-data/instance-id", &token),
            (200, VM_ID.to_owned())
        );
        vm.signal(signal);
        vm.wait_exit(Duration::from_secs(10));
        wait_until_no_tun(&world.vm, Duration::from_secs(5));
        let token = imds_token(&world.vm);
        assert_eq!(
            get(&world.vm, "/latest/meta-data/instance-id", &token),
            (200, CLOUD_ID.to_owned()),
            "after {signal}"
        );
    }
}

/// Waits until the kernel has removed every TUN device in `namespace` (and their routes).
fn wait_until_no_tun(namespace: &Namespace, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !namespace.tun_links().is_empty() {
        assert!(Instant::now() < deadline, "the TUN is still there");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `imds-tun ARGS` in `namespace`, to its end (a start that must fail).
fn run_in(namespace: &Namespace, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", namespace.name()])
        .arg(common::binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn last_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn pass_through_with_upstream_is_refused_in_one_line() {
    let output = Command::new(common::binary())
        .args([
            "--pass-through",
            "ec2",
            "--upstream",
            "http://10.0.2.2:8080",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert_eq!(
        last_line(&output),
        "imds-tun: --pass-through cannot be combined with --upstream: with --upstream every \
         request is forwarded already; drop one of them"
    );
}

#[test]
fn without_a_route_or_into_another_tun_the_start_fails_naming_pass_through() {
    let Some(alone) = Namespace::for_test(crate::test_name!()) else {
        return;
    };
    let output = run_in(&alone, &["--pass-through", "ec2", "--mock-credentials"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let line = last_line(&output);
    assert!(
        line.starts_with("imds-tun: --pass-through: the kernel has no route to 169.254.169.254"),
        "{line}"
    );
    assert!(alone.tun_links().is_empty(), "nothing was claimed");

    // Another imds-tun's TUN is not a real metadata service.
    let _first = common::start(&alone, &["--mock-credentials"]);
    let output = run_in(&alone, &["--pass-through", "ec2", "--mock-credentials"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let line = last_line(&output);
    assert!(
        line.starts_with(
            "imds-tun: --pass-through: the kernel routes 169.254.169.254 into the TUN device"
        ),
        "{line}"
    );
}

#[test]
fn check_names_the_real_service_and_says_whether_it_answers() {
    let Some(mut world) = world(crate::test_name!()) else {
        return;
    };
    let output = run_in(
        &world.vm,
        &["--check", "--pass-through", "ec2", "--mock-credentials"],
    );
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    // The cloud requires IMDSv2, so its answer to a tokenless `GET /` is 401: it answers. The
    // host route out of vguest is the real service's way, not a claim.
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        report.contains("ok    metadata address: 169.254.169.254 is not claimed"),
        "{report}"
    );
    assert!(
        report.contains(
            "pass-through: the real metadata service is 169.254.169.254 via interface vguest, \
             next hop 10.77.0.1"
        ) && report.contains("and it answers (HTTP/1.0 401 Unauthorized)"),
        "{report}"
    );
    let mut service = world.service.take().expect("the cloud's service");
    service.signal(Signal::SIGTERM);
    service.wait_exit(Duration::from_secs(10));
    let output = run_in(
        &world.vm,
        &["--check", "--pass-through", "ec2", "--mock-credentials"],
    );
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(report.contains("but it is not reachable now"), "{report}");
}

/// `python -c SCRIPT` from `<repo>/.venv` in `namespace`, with no AWS or Azure configuration:
/// its stdout, or `None` after a skip notice (a failure under CI) when the venv or `module` is
/// missing.
fn python(test: &str, namespace: &Namespace, module: &str, script: &str) -> Option<String> {
    let python = common::installed(test, common::repo().join(".venv/bin/python"))?;
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        "AWS_CONFIG_FILE=/nonexistent/config",
        "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials",
        python.to_str().expect("utf-8 path"),
        "-c",
        script,
    ]);
    if String::from_utf8_lossy(&output.stderr).contains(&format!("No module named '{module}'")) {
        common::skip_or_fail(
            test,
            &format!("{module} is not installed in .venv; scripts/test.sh installs it"),
        );
        return None;
    }
    assert!(output.status.success(), "{}", text(&output));
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// boto3 finds its region in the cloud's placement (passed) and its credentials at imds-tun
/// (local), with IMDSv2 tokens from imds-tun; azure-identity's managed identity (its IMDS probe
/// first) is imds-tun's, while the compute name is the cloud's.
#[test]
fn boto3_and_azure_identity_work_through_a_pass_through() {
    let test = crate::test_name!();
    let Some(world) = world(test) else {
        return;
    };
    let _vm = start_vm(&world.vm, &["azure", "/latest/meta-data/placement/"], &[]);
    let Some(found) = python(
        test,
        &world.vm,
        "boto3",
        "import boto3, botocore.utils\n\
         region = botocore.utils.InstanceMetadataRegionFetcher().retrieve_region()\n\
         credentials = boto3.Session(region_name=region).get_credentials()\n\
         assert credentials.method == 'iam-role', credentials.method\n\
         print(region, credentials.get_frozen_credentials().access_key[:4])",
    ) else {
        return;
    };
    assert_eq!(found, "eu-west-1 ASIA");
    let Some(token) = python(
        test,
        &world.vm,
        "azure",
        "from azure.identity import ManagedIdentityCredential\n\
         token = ManagedIdentityCredential().get_token('https://management.azure.com/.default')\n\
         print(len(token.token) > 0)",
    ) else {
        return;
    };
    assert_eq!(token, "True");
    assert_eq!(azure_name(&world.vm), (200, CLOUD_VM_NAME.to_owned()));
}

/// `imds-tun ctl ARGS` in `namespace`, which must succeed; its stdout.
fn ctl(namespace: &Namespace, args: &[&str]) -> String {
    let binary = common::binary();
    let mut command = vec![binary.to_str().expect("utf-8 path"), "ctl"];
    command.extend_from_slice(args);
    let output = namespace.exec(&command);
    assert!(output.status.success(), "ctl {args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every request the cloud's imds-tun counted, from its callers report.
fn cloud_requests(cloud: &Namespace) -> u64 {
    let report: serde_json::Value =
        serde_json::from_str(&ctl(cloud, &["callers", "--json"])).expect("ctl prints JSON");
    report["callers"]
        .as_array()
        .expect("a list of callers")
        .iter()
        .filter_map(|caller| caller["requests"].as_u64())
        .sum()
}

/// Faults apply before forwarding (the cloud never sees the request), passed requests are in
/// the callers report, and a slow real service gives 504 within the response timeout.
#[test]
fn faults_apply_before_forwarding_passed_requests_are_counted_and_a_slow_cloud_is_504() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    let _vm = start_vm(&world.vm, &["ec2"], &[]);
    let token = imds_token(&world.vm);
    ctl(
        &world.vm,
        &[
            "fault",
            "--status",
            "500",
            "--path",
            "/latest/meta-data/placement/",
            "--for",
            "30",
        ],
    );
    let placement = "/latest/meta-data/placement/availability-zone";
    let before = cloud_requests(&world._cloud);
    assert_eq!(get(&world.vm, placement, &token).0, 500);
    assert_eq!(
        cloud_requests(&world._cloud),
        before,
        "the fault answered before anything was forwarded"
    );
    // A tokenless passed request is named in the VM's callers report, as any IMDSv1 read.
    let tokenless = "/latest/meta-data/instance-id";
    assert_eq!(
        curl(&world.vm, "GET", tokenless, &[]),
        (200, CLOUD_ID.to_owned())
    );
    assert!(ctl(&world.vm, &["callers", "--json"]).contains(tokenless));
    assert!(
        cloud_requests(&world._cloud) > before,
        "a passed request is counted there"
    );

    ctl(
        &world._cloud,
        &[
            "fault",
            "--latency",
            "8000",
            "--path",
            "/latest/meta-data/instance-id",
            "--for",
            "30",
        ],
    );
    let started = Instant::now();
    let (status, body) = get(&world.vm, "/latest/meta-data/instance-id", &token);
    assert_eq!(status, 504, "{body}");
    assert!(
        body.starts_with("imds-tun: the real metadata service did not answer within"),
        "{body}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "504 after {took:?}, the response timeout is 5 s"
    );
}

/// The cloud ends every token it issued (as a restarted metadata service would): the next
/// passed request is still answered, with a new token imds-tun fetches itself.
#[test]
fn a_token_the_real_service_no_longer_takes_is_replaced_without_a_client_seeing_it() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    let _vm = start_vm(&world.vm, &["ec2"], &[]);
    let token = imds_token(&world.vm);
    assert_eq!(
        get(&world.vm, "/latest/meta-data/instance-id", &token),
        (200, CLOUD_ID.to_owned())
    );
    ctl(&world._cloud, &["tokens", "expire"]);
    assert_eq!(
        get(&world.vm, "/latest/meta-data/instance-id", &token),
        (200, CLOUD_ID.to_owned())
    );
}

/// `gce` passes the GCE tree (the cloud's project) but keeps `service-accounts/` local.
#[test]
fn gce_passes_the_tree_but_not_the_service_accounts() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    let _vm = start_vm(&world.vm, &["gce"], &["--gcp-project", "vm-project"]);
    let google = ["Metadata-Flavor: Google"];
    assert_eq!(
        curl(
            &world.vm,
            "GET",
            "/computeMetadata/v1/project/project-id",
            &google
        ),
        (200, CLOUD_PROJECT.to_owned())
    );
    let (status, cloud_number) = curl(
        &world.vm,
        "GET",
        "/computeMetadata/v1/project/numeric-project-id",
        &google,
    );
    assert_eq!(status, 200);
    let (status, email) = curl(
        &world.vm,
        "GET",
        "/computeMetadata/v1/instance/service-accounts/default/email",
        &google,
    );
    assert_eq!(status, 200, "{email}");
    assert!(
        !email.starts_with(&cloud_number),
        "the VM's own service account, not the cloud's: {email} (cloud {cloud_number})"
    );
}

/// The real service behind the default route (as on GCE and many EC2 images) is found too.
#[test]
fn a_cloud_behind_the_default_route_is_found_too() {
    let Some(world) = world_routed(
        crate::test_name!(),
        &["default", "via", "10.77.0.1", "dev", "vguest"],
    ) else {
        return;
    };
    let vm = start_vm(&world.vm, &["ec2"], &[]);
    vm.wait_for_line(Duration::from_secs(5), |line| {
        line.contains(
            "the real metadata service is 169.254.169.254 via interface vguest, next hop 10.77.0.1",
        )
    });
    let token = imds_token(&world.vm);
    assert_eq!(
        get(&world.vm, "/latest/meta-data/instance-id", &token),
        (200, CLOUD_ID.to_owned())
    );
}

/// docs/guides/real-vm.md's two commands, as written, in the VM: the CI runner's (Azure's
/// paths from the cloud, the EC2 instance imds-tun's, started in the background as the guide
/// does) and the per-process roles' (every EC2 path from the cloud but `iam/`).
#[test]
fn the_real_vm_guide_runs_as_written() {
    let Some(world) = world(crate::test_name!()) else {
        return;
    };
    let guide =
        std::fs::read_to_string(common::repo().join("docs/guides/real-vm.md")).expect("the guide");
    let runner = common::fenced_blocks(&guide, "## A CI runner on Azure", "\n## ");
    let roles = common::fenced_blocks(
        &guide,
        "## Per-process roles on a real EC2 instance",
        "\n## ",
    );
    assert_eq!((runner.len(), roles.len()), (1, 1), "{runner:?} {roles:?}");

    // The runner's command backgrounds imds-tun itself: its pid is what `$!` says.
    let scratch = common::TempDir::new();
    let shell = common::DocShell::new();
    let here = scratch.path().to_str().expect("a UTF-8 path");
    let pid: i32 = shell
        .run(&world.vm, &format!("cd '{here}'\n{}echo $!", runner[0]))
        .trim()
        .parse()
        .expect("the background pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    let region = loop {
        let answer = curl(&world.vm, "GET", "/latest/meta-data/placement/region", &[]);
        if answer.0 == 200 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(scratch.path().join("imds-tun.log")).unwrap_or_default();
    assert_eq!(region, (200, "eu-west-1".to_owned()), "{log}");
    assert_eq!(
        azure_name(&world.vm),
        (200, CLOUD_VM_NAME.to_owned()),
        "{log}"
    );
    let (status, instance_id) = curl(&world.vm, "GET", "/latest/meta-data/instance-id", &[]);
    assert_eq!(status, 200);
    assert_ne!(instance_id, CLOUD_ID, "EC2 is imds-tun's here");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).expect("kill");
    // Gone, or a zombie its new parent has not reaped yet: either way its claim is released.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the runner's imds-tun is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until_no_tun(&world.vm, Duration::from_secs(10));

    let flags: Vec<&str> = roles[0]
        .trim()
        .strip_prefix("sudo imds-tun ")
        .expect("the roles block starts imds-tun")
        .split_whitespace()
        .filter(|word| *word != "\\")
        .collect();
    let vm = common::start(&world.vm, &flags);
    let token = imds_token(&world.vm);
    assert_eq!(
        get(&world.vm, "/latest/meta-data/instance-id", &token),
        (200, CLOUD_ID.to_owned())
    );
    assert_eq!(
        get(&world.vm, "/latest/meta-data/tags/instance/Name", &token),
        (200, CLOUD_TAG.to_owned())
    );
    let (status, role) = get(
        &world.vm,
        "/latest/meta-data/iam/security-credentials/",
        &token,
    );
    assert_eq!(status, 200);
    assert_ne!(role, CLOUD_ROLE, "iam/ is imds-tun's");
    drop(vm);
}
