//! The instance the metadata service describes, in the service's own words: every value it
//! answers with, and whether a session token is required. The configuration builds these; this
//! layer only serves them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Whether metadata requests need an IMDSv2 session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPolicy {
    /// Tokenless (IMDSv1) requests are served too.
    Optional,
    /// Every metadata request needs a session token.
    Required,
}

/// The instance as the metadata service describes it. All values are resolved and mutually
/// consistent (the zone is in the region, the interface carries the instance's addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `instance-id` and the identity document's `instanceId` (`--instance-id`; `i-` + 8 or
    /// 17 hex).
    pub instance_id: String,
    /// `reservation-id` (config `reservation_id`; `r-` + hex).
    pub reservation_id: String,
    /// `ami-id` and the document's `imageId` (`--ami-id`).
    pub ami_id: String,
    /// `instance-type` and the document's `instanceType` (`--instance-type`).
    pub instance_type: String,
    /// The document's `accountId`, the interface's `owner-id`, and the account in
    /// `iam/info`'s `InstanceProfileArn` (`--account-id`; 12 digits).
    pub account_id: String,
    /// `placement/region` and the document's `region`; also picks the partition and domain
    /// under `services/` (`--region`).
    pub region: String,
    /// `placement/availability-zone` and the document's `availabilityZone`; within
    /// [`Instance::region`] (`--availability-zone`).
    pub availability_zone: String,
    /// `placement/availability-zone-id`, e.g. `use1-az1` (config `availability_zone_id`).
    pub availability_zone_id: String,
    /// `x86_64`, `arm64` or `i386`, from the host this runs on.
    pub architecture: String,
    /// `hostname` (`--hostname`; default this host's name).
    pub hostname: String,
    /// `local-hostname`, also the interface's (config `local_hostname`; default `hostname`).
    pub local_hostname: String,
    /// `local-ipv4`, the interface's `local-ipv4s` and the document's `privateIp`
    /// (`--local-ipv4`).
    pub local_ipv4: Ipv4Addr,
    /// `None`: the instance has no public address and the public leaves answer 404.
    pub public_ipv4: Option<Ipv4Addr>,
    /// `public-hostname` (config `public_hostname`, else EC2's `ec2-a-b-c-d...` name); set
    /// exactly when [`Instance::public_ipv4`] is.
    pub public_hostname: Option<String>,
    /// `mac`, and the key of the one interface under `network/interfaces/macs/` (`--mac`).
    pub mac: String,
    /// The interface's `interface-id` (`eni-` + hex, derived from the machine).
    pub interface_id: String,
    /// The interface's `subnet-id` (derived from the machine).
    pub subnet_id: String,
    /// The interface's `vpc-id` (derived from the machine).
    pub vpc_id: String,
    /// The interface's `subnet-ipv4-cidr-block`: the /20 around
    /// [`Instance::local_ipv4`].
    pub subnet_ipv4_cidr_block: String,
    /// The interface's `vpc-ipv4-cidr-block` and `vpc-ipv4-cidr-blocks`: the /16 around
    /// [`Instance::local_ipv4`].
    pub vpc_ipv4_cidr_block: String,
    /// `security-groups` (names) and the interface's `security-group-ids`, in order (config
    /// `security_groups`; never empty).
    pub security_groups: Vec<SecurityGroup>,
    /// The instance profile's role; `iam/security-credentials/<role_name>` serves its keys.
    pub role_name: String,
    /// `iam/info`'s `InstanceProfileId` (`AIPA` + 17 characters, derived from the machine).
    pub instance_profile_id: String,
    /// `public-keys/`; `None`: no launch key (`public-keys/` answers 404).
    pub public_key: Option<PublicKey>,
    /// Instance tags; empty means tags are not exposed (`tags/` answers 404).
    pub tags: BTreeMap<String, String>,
    /// `None`: no user data (`user-data` answers 404).
    pub user_data: Option<bytes::Bytes>,
}

/// A security group attached to the instance's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// The group's name, a line of `security-groups`.
    pub name: String,
    /// Its id (`sg-` + hex, derived from the name), a line of `security-group-ids`.
    pub id: String,
}

/// The launch key pair served under `public-keys/0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key pair's name, listed as `0=<name>` under `public-keys/`.
    pub name: String,
    /// The public key in OpenSSH's one-line form, served at `public-keys/0/openssh-key`.
    pub openssh_key: String,
}

/// The partition and its service domain, as `services/partition` and `services/domain` report.
pub fn partition(region: &str) -> (&'static str, &'static str) {
    if region.starts_with("cn-") {
        ("aws-cn", "amazonaws.com.cn")
    } else if region.starts_with("us-gov-") {
        ("aws-us-gov", "amazonaws.com")
    } else {
        ("aws", "amazonaws.com")
    }
}

#[cfg(test)]
impl Instance {
    /// A complete, consistent instance for tests: what the configuration derives for a host
    /// called `test-host` at 172.31.40.7.
    pub(crate) fn example() -> Instance {
        Instance {
            instance_id: "i-5f55c258af584e3cd".into(),
            reservation_id: "r-0811908350b1dc023".into(),
            ami_id: "ami-4829797ae93a37809".into(),
            instance_type: "t3.micro".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            availability_zone_id: "use1-az1".into(),
            architecture: "x86_64".into(),
            hostname: "test-host".into(),
            local_hostname: "test-host".into(),
            local_ipv4: Ipv4Addr::new(172, 31, 40, 7),
            public_ipv4: None,
            public_hostname: None,
            mac: "0e:31:a2:02:fe:5d".into(),
            interface_id: "eni-7119221a4cb8c331d".into(),
            subnet_id: "subnet-f080bc2aafa299e67".into(),
            vpc_id: "vpc-29e7b9a42232ffcb1".into(),
            subnet_ipv4_cidr_block: "172.31.32.0/20".into(),
            vpc_ipv4_cidr_block: "172.31.0.0/16".into(),
            security_groups: vec![SecurityGroup {
                name: "default".into(),
                id: "sg-f24480a5de021db36".into(),
            }],
            role_name: "imds-tun".into(),
            instance_profile_id: "AIPA88358F8FAED2E6729".into(),
            public_key: None,
            tags: BTreeMap::new(),
            user_data: None,
        }
    }
}
