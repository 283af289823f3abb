//! Task metadata v4 for one ECS id: the container (`/v4/ID`) and its task (`/v4/ID/task`), in
//! the ECS agent's field names, order and shapes (its `v4.TaskResponse` and
//! `v4.ContainerResponse`), built once at start-up.
//!
//! Each id is one task of one container, launched on this instance (`LaunchType` `EC2`) in
//! `awsvpc` mode on the instance's interface. Every value comes from the instance settings or
//! is derived from them and the id, so it is stable on one machine (docs/metadata.md#ecs lists
//! each value's origin):
//!
//! - `Cluster` is [`CLUSTER`]; `TaskARN` is in the instance's region, account and partition,
//!   its task id 32 hex digits of a digest of the instance id and the ECS id;
//! - `Family` and the container's `Name` are the ECS id, `Revision` `1`;
//! - `DockerId` (64 hex), `ImageID` and the `ContainerARN`'s id are digests of the same;
//! - `Image` is an ECR repository named after the id in the instance's account and region;
//! - `AvailabilityZone`, `VPCID` and the network (address, MAC, subnet, DNS name) are the
//!   instance's;
//! - `CreatedAt` and `StartedAt` are when imds-tun started.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::super::ec2::responses::iso8601_utc_seconds;
use super::super::ec2::{Instance, partition};

/// The cluster every task is in.
pub const CLUSTER: &str = "imds-tun";

/// The two documents of one id, serialized once.
#[derive(Debug, Clone)]
pub struct Documents {
    /// `/v4/ID`.
    pub container: Bytes,
    /// `/v4/ID/task`.
    pub task: Bytes,
}

impl Documents {
    /// The documents of `id` on `instance`, its task started at `started`.
    pub fn build(instance: &Instance, id: &str, started: OffsetDateTime) -> Documents {
        let container = container(instance, id, started);
        let task = TaskResponse {
            cluster: CLUSTER,
            task_arn: task_arn(instance, id),
            family: id,
            revision: "1",
            desired_status: "RUNNING",
            known_status: "RUNNING",
            availability_zone: &instance.availability_zone,
            launch_type: "EC2",
            containers: vec![container.clone()],
            vpc_id: &instance.vpc_id,
            fault_injection_enabled: false,
        };
        Documents {
            container: to_json(&container),
            task: to_json(&task),
        }
    }
}

/// Compact JSON, as the agent writes it; these plain structs always serialize.
fn to_json(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

/// `bytes` hex digits of a digest of `kind`, the instance id and the ECS id.
fn derived_hex(instance: &Instance, kind: &str, id: &str, digits: usize) -> String {
    let digest = Sha256::digest(format!(
        "imds-tun ecs {kind}\0{}\0{id}",
        instance.instance_id
    ));
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    hex[..digits.min(hex.len())].to_owned()
}

fn arn_prefix(instance: &Instance) -> String {
    let (partition, _) = partition(&instance.region);
    format!(
        "arn:{partition}:ecs:{}:{}",
        instance.region, instance.account_id
    )
}

fn task_id(instance: &Instance, id: &str) -> String {
    derived_hex(instance, "task", id, 32)
}

fn task_arn(instance: &Instance, id: &str) -> String {
    format!(
        "{}:task/{CLUSTER}/{}",
        arn_prefix(instance),
        task_id(instance, id)
    )
}

fn container(instance: &Instance, id: &str, started: OffsetDateTime) -> ContainerResponse {
    let (_, domain) = partition(&instance.region);
    let task_arn = task_arn(instance, id);
    let uuid = derived_hex(instance, "container", id, 32);
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &uuid[..8],
        &uuid[8..12],
        &uuid[12..16],
        &uuid[16..20],
        &uuid[20..]
    );
    let labels = BTreeMap::from([
        ("com.amazonaws.ecs.cluster", CLUSTER.to_owned()),
        ("com.amazonaws.ecs.container-name", id.to_owned()),
        ("com.amazonaws.ecs.task-arn", task_arn.clone()),
        ("com.amazonaws.ecs.task-definition-family", id.to_owned()),
        ("com.amazonaws.ecs.task-definition-version", "1".to_owned()),
    ]);
    let started = iso8601_utc_seconds(started);
    ContainerResponse {
        docker_id: derived_hex(instance, "docker", id, 64),
        name: id.to_owned(),
        docker_name: format!(
            "ecs-{id}-1-{id}-{}",
            derived_hex(instance, "docker-name", id, 20)
        ),
        image: format!(
            "{}.dkr.ecr.{}.{domain}/{id}:latest",
            instance.account_id, instance.region
        ),
        image_id: format!("sha256:{}", derived_hex(instance, "image", id, 64)),
        labels,
        desired_status: "RUNNING",
        known_status: "RUNNING",
        limits: Limits { cpu: 0, memory: 0 },
        created_at: started.clone(),
        started_at: started,
        kind: "NORMAL",
        container_arn: format!(
            "{}:container/{CLUSTER}/{}/{uuid}",
            arn_prefix(instance),
            task_id(instance, id)
        ),
        networks: vec![Network {
            network_mode: "awsvpc",
            ipv4_addresses: vec![instance.local_ipv4.to_string()],
            attachment_index: 0,
            mac_address: instance.mac.clone(),
            ipv4_subnet_cidr_block: instance.subnet_ipv4_cidr_block.clone(),
            private_dns_name: instance.local_hostname.clone(),
            subnet_gateway_ipv4_address: subnet_gateway(&instance.subnet_ipv4_cidr_block),
        }],
    }
}

/// The subnet's router, its first address, with the prefix length (`172.31.32.1/20`), as
/// the agent writes `SubnetGatewayIpv4Address`; `None` for a block that does not parse.
pub fn subnet_gateway(block: &str) -> Option<String> {
    let (address, length) = block.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let length: u32 = length.parse().ok().filter(|length| *length <= 30)?;
    let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
    let gateway = Ipv4Addr::from((u32::from(address) & mask).checked_add(1)?);
    Some(format!("{gateway}/{length}"))
}

/// The agent's `v4.TaskResponse`, the fields imds-tun fills, in its order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TaskResponse<'a> {
    cluster: &'a str,
    #[serde(rename = "TaskARN")]
    task_arn: String,
    family: &'a str,
    revision: &'a str,
    desired_status: &'a str,
    known_status: &'a str,
    availability_zone: &'a str,
    launch_type: &'a str,
    containers: Vec<ContainerResponse>,
    #[serde(rename = "VPCID")]
    vpc_id: &'a str,
    fault_injection_enabled: bool,
}

/// The agent's `v4.ContainerResponse`, in its order.
#[derive(Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerResponse {
    docker_id: String,
    name: String,
    docker_name: String,
    image: String,
    #[serde(rename = "ImageID")]
    image_id: String,
    labels: BTreeMap<&'static str, String>,
    desired_status: &'static str,
    known_status: &'static str,
    limits: Limits,
    created_at: String,
    started_at: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "ContainerARN")]
    container_arn: String,
    networks: Vec<Network>,
}

#[derive(Clone, Serialize)]
struct Limits {
    #[serde(rename = "CPU")]
    cpu: u32,
    #[serde(rename = "Memory")]
    memory: u32,
}

/// The agent's `v4.Network` for an `awsvpc` interface.
#[derive(Clone, Serialize)]
struct Network {
    #[serde(rename = "NetworkMode")]
    network_mode: &'static str,
    #[serde(rename = "IPv4Addresses")]
    ipv4_addresses: Vec<String>,
    #[serde(rename = "AttachmentIndex")]
    attachment_index: u32,
    #[serde(rename = "MACAddress")]
    mac_address: String,
    #[serde(rename = "IPv4SubnetCIDRBlock")]
    ipv4_subnet_cidr_block: String,
    #[serde(rename = "PrivateDNSName")]
    private_dns_name: String,
    #[serde(
        rename = "SubnetGatewayIpv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    subnet_gateway_ipv4_address: Option<String>,
}
