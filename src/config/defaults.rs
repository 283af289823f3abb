//! Defaults that look like a real instance and stay the same on one machine across runs.
//!
//! Every id is derived from one seed: SHA-256 of `/etc/machine-id` (falling back to
//! `/var/lib/dbus/machine-id`, then the hostname). Each id hashes the seed with its own label, so
//! the instance, reservation, image, interface, subnet and VPC ids are unrelated to each other
//! but each is stable, and two machines get different ones. Nothing here sends a packet.
//!
//! The account id is the fixed, documented example `123456789012`: obviously not a real account,
//! so nobody mistakes the emulator's identity for a real one.

use std::net::Ipv4Addr;

use crate::platform::host;

use sha2::{Digest, Sha256};

/// The example account id AWS uses in its own documentation.
pub const ACCOUNT_ID: &str = "123456789012";
/// `--region` when neither it nor `--availability-zone` is given.
pub const REGION: &str = "us-east-1";
/// `--availability-zone` when neither it nor `--region` is given (with a region alone, the
/// region's `a` zone).
pub const AVAILABILITY_ZONE: &str = "us-east-1a";
/// `--instance-type`: a small, common type.
pub const INSTANCE_TYPE: &str = "t3.micro";
/// `--role-name` when no `--role-arn` names one.
pub const ROLE_NAME: &str = "imds-tun";
/// The one security group when config `security_groups` is not given: a VPC's default group.
pub const SECURITY_GROUP: &str = "default";
/// `--tun-name`: `%d` lets the kernel pick the first free number (`imds0`, `imds1`, ...).
pub const TUN_NAME: &str = "imds%d";
/// `--mtu`, in bytes: Ethernet's.
pub const MTU: u64 = 1500;
/// `--max-connections`: concurrent TCP connections through the TUN.
pub const MAX_CONNECTIONS: u64 = 1024;
/// `--shutdown-grace`, in seconds: how long in-flight requests may run after a signal.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 5;
/// Fake credentials live six hours, like real instance-profile credentials.
pub const CREDENTIALS_LIFETIME_SECONDS: u64 = 6 * 3600;
pub use crate::credentials::settings::ROLE_DURATION_SECONDS;
pub use crate::credentials::settings::SESSION_DURATION_SECONDS;
/// First retry delay after a failed refresh.
pub const RETRY_BASE_MS: u64 = 1000;
/// Largest user data served: EC2's own limit, 16 KiB raw (before base64).
pub const MAX_USER_DATA_BYTES: u64 = 16 * 1024;
/// The most `--max-user-data-bytes` may allow, so a setting cannot make the read unbounded.
pub const MAX_USER_DATA_BYTES_LIMIT: u64 = 1024 * 1024;

/// What the machine contributes to the defaults: a seed, its hostname and its primary address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDefaults {
    seed: [u8; 32],
    hostname: String,
    primary_ipv4: Option<Ipv4Addr>,
}

impl MachineDefaults {
    /// Reads the machine id, hostname and primary IPv4 of this host.
    pub fn probe() -> MachineDefaults {
        let hostname = host::hostname().unwrap_or_else(|| "localhost".to_owned());
        let machine_id = host::machine_id().unwrap_or_else(|| hostname.clone());
        MachineDefaults::from_parts(&machine_id, &hostname, host::primary_ipv4())
    }

    /// Builds defaults from explicit parts (tests and other hosts).
    pub fn from_parts(
        machine_id: &str,
        hostname: &str,
        primary_ipv4: Option<Ipv4Addr>,
    ) -> MachineDefaults {
        MachineDefaults {
            seed: Sha256::digest(machine_id.as_bytes()).into(),
            hostname: hostname.to_owned(),
            primary_ipv4,
        }
    }

    /// `digits` hex digits of SHA-256(seed || label): one stable, independent id per label.
    fn hex(&self, label: &str, digits: usize) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.seed);
        hasher.update(label.as_bytes());
        let hash = hasher.finalize();
        let mut text: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
        text.truncate(digits);
        text
    }

    fn bytes(&self, label: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.seed);
        hasher.update(label.as_bytes());
        hasher.finalize().into()
    }

    /// The default `instance-id`: `i-` and 17 hex digits.
    pub fn instance_id(&self) -> String {
        format!("i-{}", self.hex("instance-id", 17))
    }
    /// The default `reservation-id`: `r-` and 17 hex digits.
    pub fn reservation_id(&self) -> String {
        format!("r-{}", self.hex("reservation-id", 17))
    }
    /// The default `ami-id`: `ami-` and 17 hex digits.
    pub fn ami_id(&self) -> String {
        format!("ami-{}", self.hex("ami-id", 17))
    }
    /// The interface's `interface-id`: `eni-` and 17 hex digits.
    pub fn interface_id(&self) -> String {
        format!("eni-{}", self.hex("interface-id", 17))
    }
    /// The interface's `subnet-id`: `subnet-` and 17 hex digits.
    pub fn subnet_id(&self) -> String {
        format!("subnet-{}", self.hex("subnet-id", 17))
    }
    /// The interface's `vpc-id`: `vpc-` and 17 hex digits.
    pub fn vpc_id(&self) -> String {
        format!("vpc-{}", self.hex("vpc-id", 17))
    }
    /// Security group ids are per group name, so renaming a group changes only its id.
    pub fn security_group_id(&self, name: &str) -> String {
        format!("sg-{}", self.hex(&format!("security-group:{name}"), 17))
    }
    /// Instance profile ids start with `AIPA` and 17 upper-case alphanumerics.
    pub fn instance_profile_id(&self) -> String {
        format!(
            "AIPA{}",
            self.hex("instance-profile-id", 17).to_ascii_uppercase()
        )
    }

    /// A locally administered unicast MAC, `0e:` then five hash bytes (EC2 uses `0e:`/`02:`
    /// prefixes for the same reason: they cannot clash with a vendor's address).
    pub fn mac(&self) -> String {
        let bytes = self.bytes("mac");
        let tail: Vec<String> = bytes[..5].iter().map(|b| format!("{b:02x}")).collect();
        format!("0e:{}", tail.join(":"))
    }

    /// A stable text derived from this machine for `label`: seeds another cloud's ids.
    pub fn seed_text(&self, label: &str) -> String {
        self.hex(label, 32)
    }

    /// The host's primary IPv4, if it has one.
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.primary_ipv4
    }

    /// This host's name (`localhost` when it has none): the default `hostname`, and the
    /// GCE and Azure instance names.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The host's primary IPv4 when it has one, else a stable address in the default-VPC range
    /// 172.31.0.0/16 so the instance still looks like it sits in a VPC.
    pub fn local_ipv4(&self) -> Ipv4Addr {
        self.primary_ipv4.unwrap_or_else(|| {
            let bytes = self.bytes("local-ipv4");
            // Keep the host part off .0 and .255 so it is never a network or broadcast address.
            Ipv4Addr::new(172, 31, bytes[0], 1 + bytes[1] % 254)
        })
    }
}

/// The zone id AWS would print for `zone` (`us-east-1a` → `use1-az1`): the region's short form
/// and the zone letter's position. Real zone ids are shuffled per account, so any number is
/// plausible; this one is at least stable.
pub fn availability_zone_id(region: &str, zone: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    let mut short = String::new();
    for (index, part) in parts.iter().enumerate() {
        let is_first = index == 0;
        let is_last = index + 1 == parts.len();
        if is_first || is_last {
            short.push_str(part);
        } else {
            // Compass words keep two letters, as in `apse2`, `apne1`, `euc1`.
            let abbreviation = match *part {
                "northeast" => "ne",
                "northwest" => "nw",
                "southeast" => "se",
                "southwest" => "sw",
                other => other.get(..1).unwrap_or(""),
            };
            short.push_str(abbreviation);
        }
    }
    let letter = zone
        .strip_prefix(region)
        .and_then(|rest| rest.bytes().last());
    let number = letter
        .filter(u8::is_ascii_lowercase)
        .map_or(1, |letter| u32::from(letter - b'a') + 1);
    format!("{short}-az{number}")
}

/// EC2's public DNS name for a public address (`ec2-1-2-3-4.compute-1.amazonaws.com`).
pub fn public_hostname(ip: Ipv4Addr, region: &str) -> String {
    let dashed = ip.to_string().replace('.', "-");
    if region == "us-east-1" {
        format!("ec2-{dashed}.compute-1.amazonaws.com")
    } else {
        format!("ec2-{dashed}.{region}.compute.amazonaws.com")
    }
}

/// The VPC (/16) and subnet (/20) that contain `ip`, the shape of a default VPC.
pub fn vpc_and_subnet_cidrs(ip: Ipv4Addr) -> (String, String) {
    let [a, b, c, _] = ip.octets();
    (
        format!("{a}.{b}.0.0/16"),
        format!("{a}.{b}.{}.0/20", c & 0xf0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate;

    fn machine() -> MachineDefaults {
        MachineDefaults::from_parts("0123456789abcdef0123456789abcdef", "build-host", None)
    }

    #[test]
    fn derived_ids_have_real_shapes() {
        let m = machine();
        assert!(validate::instance_id(&m.instance_id()).is_ok());
        assert!(validate::ami_id(&m.ami_id()).is_ok());
        assert!(validate::reservation_id(&m.reservation_id()).is_ok());
        assert!(validate::mac(&m.mac()).is_ok());
        assert!(m.mac().starts_with("0e:"));
        assert_eq!(m.interface_id().len(), "eni-".len() + 17);
        assert!(m.instance_profile_id().starts_with("AIPA"));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct_per_machine() {
        assert_eq!(machine().instance_id(), machine().instance_id());
        let other = MachineDefaults::from_parts("another-machine", "build-host", None);
        assert_ne!(machine().instance_id(), other.instance_id());
        assert_ne!(machine().vpc_id(), machine().subnet_id());
    }

    #[test]
    fn probe_is_stable_across_runs() {
        assert_eq!(MachineDefaults::probe(), MachineDefaults::probe());
    }

    #[test]
    fn without_a_primary_address_local_ipv4_is_in_the_default_vpc() {
        let ip = machine().local_ipv4();
        assert_eq!(ip.octets()[..2], [172, 31]);
        assert_ne!(ip.octets()[3], 0);
        assert_ne!(ip.octets()[3], 255);
    }

    #[test]
    fn zone_ids_follow_the_aws_short_forms() {
        assert_eq!(availability_zone_id("us-east-1", "us-east-1a"), "use1-az1");
        assert_eq!(
            availability_zone_id("ap-southeast-2", "ap-southeast-2c"),
            "apse2-az3"
        );
        assert_eq!(
            availability_zone_id("eu-central-1", "eu-central-1b"),
            "euc1-az2"
        );
    }

    #[test]
    fn cidrs_contain_the_address() {
        let (vpc, subnet) = vpc_and_subnet_cidrs(Ipv4Addr::new(172, 31, 37, 9));
        assert_eq!(vpc, "172.31.0.0/16");
        assert_eq!(subnet, "172.31.32.0/20");
    }
}
