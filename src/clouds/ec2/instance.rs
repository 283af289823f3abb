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
    pub instance_id: String,
    pub reservation_id: String,
    pub ami_id: String,
    pub instance_type: String,
    pub account_id: String,
    pub region: String,
    pub availability_zone: String,
    pub availability_zone_id: String,
    /// `x86_64`, `arm64` or `i386`, from the host this runs on.
    pub architecture: String,
    pub hostname: String,
    pub local_hostname: String,
    pub local_ipv4: Ipv4Addr,
    /// `None`: the instance has no public address and the public leaves answer 404.
    pub public_ipv4: Option<Ipv4Addr>,
    pub public_hostname: Option<String>,
    pub mac: String,
    pub interface_id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub subnet_ipv4_cidr_block: String,
    pub vpc_ipv4_cidr_block: String,
    pub security_groups: Vec<SecurityGroup>,
    /// The instance profile's role; `iam/security-credentials/<role_name>` serves its keys.
    pub role_name: String,
    pub instance_profile_id: String,
    pub public_key: Option<PublicKey>,
    /// Instance tags; empty means tags are not exposed (`tags/` answers 404).
    pub tags: BTreeMap<String, String>,
    /// `None`: no user data (`user-data` answers 404).
    pub user_data: Option<bytes::Bytes>,
}

/// A security group attached to the instance's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    pub name: String,
    pub id: String,
}

/// The launch key pair served under `public-keys/0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
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
