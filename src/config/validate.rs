//! Format checks for single metadata values, each a pure function of the text.
//!
//! Every check returns the normalised value or the *expected* form as a phrase, so the caller can
//! prefix it with the field's name and origin (`config: instance_id "x": expected …`). Checks
//! that involve two fields (region and zone) live in [`super::resolve`](mod@super::resolve).

use std::net::Ipv4Addr;

/// `i-` followed by 8 (old) or 17 (current) lower-case hex digits, as EC2 issues them.
pub fn instance_id(value: &str) -> Result<String, String> {
    prefixed_hex_id(value, "i-")
}

/// `ami-` followed by 8 or 17 lower-case hex digits.
pub fn ami_id(value: &str) -> Result<String, String> {
    prefixed_hex_id(value, "ami-")
}

/// `r-` followed by 8 or 17 lower-case hex digits.
pub fn reservation_id(value: &str) -> Result<String, String> {
    prefixed_hex_id(value, "r-")
}

fn prefixed_hex_id(value: &str, prefix: &str) -> Result<String, String> {
    let digits = value.strip_prefix(prefix).unwrap_or("");
    let hex_ok = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if value.starts_with(prefix) && hex_ok && matches!(digits.len(), 8 | 17) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "expected \"{prefix}\" followed by 8 or 17 lower-case hex digits"
        ))
    }
}

/// Twelve decimal digits, as every AWS account id.
pub fn account_id(value: &str) -> Result<String, String> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err("expected 12 decimal digits".into())
    }
}

/// A region name such as `us-east-1` or `us-gov-west-1`: lower-case words joined by `-`, ending
/// in a number.
pub fn region(value: &str) -> Result<String, String> {
    let parts: Vec<&str> = value.split('-').collect();
    let words_ok = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase()));
    let number_ok = parts
        .last()
        .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()));
    if words_ok && number_ok {
        Ok(value.to_owned())
    } else {
        Err("expected a region name such as \"us-east-1\"".into())
    }
}

/// An availability zone: the region followed by lower-case letters/digits/`-` (`us-east-1a`,
/// or a local zone such as `us-east-1-bos-1a`). The region part is checked by the caller.
pub fn availability_zone(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.bytes().last().is_some_and(|b| b.is_ascii_lowercase())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected a zone name such as \"us-east-1a\"".into())
    }
}

/// A zone id such as `use1-az1`.
pub fn availability_zone_id(value: &str) -> Result<String, String> {
    let ok = value.split_once("-az").is_some_and(|(prefix, number)| {
        !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
    });
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected a zone id such as \"use1-az1\"".into())
    }
}

/// An instance type such as `t3.micro`: family `.` size.
pub fn instance_type(value: &str) -> Result<String, String> {
    let ok = value.split_once('.').is_some_and(|(family, size)| {
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        word(family) && word(size)
    });
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected an instance type such as \"t3.micro\"".into())
    }
}

/// A dotted-quad IPv4 address.
pub fn ipv4(value: &str) -> Result<Ipv4Addr, String> {
    value
        .parse()
        .map_err(|_| "expected an IPv4 address such as \"172.31.16.5\"".to_string())
}

/// Six two-digit hex groups joined by `:`; served in lower case as EC2 does.
pub fn mac(value: &str) -> Result<String, String> {
    let groups: Vec<&str> = value.split(':').collect();
    let ok = groups.len() == 6
        && groups
            .iter()
            .all(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err("expected a MAC address such as \"0e:1a:2b:3c:4d:5e\"".into())
    }
}

/// A single path segment of the metadata tree (role names, tag keys, hostnames): non-empty,
/// no `/`, not `.`/`..`, no control characters. Anything else would break the tree's paths.
pub fn path_segment(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && !value.contains('/')
        && !value.chars().any(char::is_control);
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected a non-empty name without \"/\" or control characters".into())
    }
}

/// A one-line text value (hostnames, key names): non-empty, no control characters.
pub fn single_line(value: &str) -> Result<String, String> {
    if !value.is_empty() && !value.chars().any(char::is_control) {
        Ok(value.to_owned())
    } else {
        Err("expected a non-empty single line of text".into())
    }
}

/// A whole number within `range`, for limits and durations.
pub fn in_range(
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "expected {} to {} {unit}",
            range.start(),
            range.end()
        ))
    }
}

/// A TUN interface name: at most 15 bytes (IFNAMSIZ - 1), no `/` or whitespace; `%d` lets the
/// kernel pick the number.
pub fn tun_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 15
        && !value
            .bytes()
            .any(|b| b == b'/' || b.is_ascii_whitespace() || b.is_ascii_control());
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected an interface name of 1 to 15 characters without \"/\" or spaces".into())
    }
}

pub use crate::credentials::settings::mfa_code;

/// An MFA device serial: the virtual device's ARN (`arn:aws:iam::123456789012:mfa/alice`) or a
/// hardware serial; STS allows 9-256 of `[\w+=/:,.@-]`.
pub fn mfa_serial(value: &str) -> Result<String, String> {
    let ok = (9..=256).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=/:,.@-".contains(c));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected an MFA device ARN such as \"arn:aws:iam::123456789012:mfa/alice\" or a hardware serial".into())
    }
}

/// An external id: 2-1224 of `[\w+=,.@:/-]`.
pub fn external_id(value: &str) -> Result<String, String> {
    let ok = (2..=1224).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected 2 to 1224 characters of letters, digits and _+=,.@:/-".into())
    }
}

/// A GCE project id: 6-30 lower-case letters, digits and `-`, starting with a letter, not
/// ending with `-`.
pub fn gcp_project(value: &str) -> Result<String, String> {
    if gce_name(value, 6..=30) {
        Ok(value.to_owned())
    } else {
        Err("expected a GCP project id: 6-30 lower-case letters, digits and '-', starting with a letter".into())
    }
}

/// Google's resource-name rule (RFC 1035 labels): lower-case letters, digits and `-`, starting
/// with a letter, not ending with `-`, a length in `lengths`.
fn gce_name(value: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A GCE zone such as `us-central1-a` or `europe-west4-b`.
pub fn gcp_zone(value: &str) -> Result<String, String> {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = parts.len() == 3
        && parts[0].len() >= 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1].ends_with(|c: char| c.is_ascii_digit())
        && parts[1]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && parts[2].len() == 1
        && parts[2].bytes().all(|b| b.is_ascii_lowercase());
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected a GCE zone such as \"us-central1-a\"".into())
    }
}

/// A GCE instance name: 1-63 lower-case letters, digits and `-`, starting with a letter, not
/// ending with `-`.
pub fn gcp_instance_name(value: &str) -> Result<String, String> {
    if gce_name(value, 1..=63) {
        Ok(value.to_owned())
    } else {
        Err("expected 1-63 lower-case letters, digits and '-', starting with a letter".into())
    }
}

/// A service account email: `NAME@DOMAIN`, printable, at most 254 characters.
pub fn gcp_service_account(value: &str) -> Result<String, String> {
    let ok = value.len() <= 254
        && value
            .split_once('@')
            .is_some_and(|(name, domain)| !name.is_empty() && domain.contains('.'))
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(
            "expected a service account email such as \"app@my-project.iam.gserviceaccount.com\""
                .into(),
        )
    }
}

/// A GCE metadata key: 1-128 letters, digits, `-` and `_`.
pub fn gcp_attribute_key(value: &str) -> Result<String, String> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected 1-128 letters, digits, '-' and '_'".into())
    }
}

/// A GUID, `8-4-4-4-12` hex digits; served in lower case.
pub fn guid(value: &str) -> Result<String, String> {
    let groups: Vec<&str> = value.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err("expected a GUID such as \"0f8fad5b-d9cb-469f-a165-70867728950e\"".into())
    }
}

/// An Azure resource name (VM, resource group, location, size): 1-90 letters, digits, `-`,
/// `_`, `.` and `(`/`)`, as ARM allows for resource groups.
pub fn azure_name(value: &str) -> Result<String, String> {
    let ok = (1..=90).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.()".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected 1-90 letters, digits, '-', '_', '.', '(' and ')'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_accepts_short_and_long_forms_only() {
        assert!(instance_id("i-0123abcd").is_ok());
        assert!(instance_id("i-0123456789abcdef0").is_ok());
        assert!(instance_id("i-0123456789ABCDEF0").is_err());
        assert!(instance_id("x-123").is_err());
        assert!(instance_id("i-123").is_err());
    }

    #[test]
    fn account_id_needs_twelve_digits() {
        assert!(account_id("123456789012").is_ok());
        assert!(account_id("12345678901").is_err());
        assert!(account_id("12345678901a").is_err());
    }

    #[test]
    fn region_and_zone_shapes() {
        assert!(region("us-east-1").is_ok());
        assert!(region("us-gov-west-1").is_ok());
        assert!(region("useast1").is_err());
        assert!(region("US-EAST-1").is_err());
        assert!(availability_zone("us-east-1a").is_ok());
        assert!(availability_zone("us-east-1").is_err());
        assert!(availability_zone_id("use1-az4").is_ok());
        assert!(availability_zone_id("use1az4").is_err());
    }

    #[test]
    fn mac_is_normalised_to_lower_case() {
        assert_eq!(mac("0E:AA:bb:01:02:03").as_deref(), Ok("0e:aa:bb:01:02:03"));
        assert!(mac("0e:aa:bb:01:02").is_err());
        assert!(mac("0e-aa-bb-01-02-03").is_err());
    }

    #[test]
    fn path_segment_rejects_slashes_and_dots() {
        assert!(path_segment("Name").is_ok());
        assert!(path_segment("").is_err());
        assert!(path_segment("a/b").is_err());
        assert!(path_segment("..").is_err());
    }

    #[test]
    fn gce_and_azure_names_follow_their_clouds_rules() {
        assert!(gcp_project("my-project-1").is_ok());
        assert!(gcp_project("My-Project").is_err());
        assert!(gcp_project("short").is_err());
        assert!(gcp_project("ends-with-").is_err());
        assert!(gcp_zone("europe-west4-b").is_ok());
        assert!(gcp_zone("us-central1").is_err());
        assert!(gcp_instance_name("web-1").is_ok());
        assert!(gcp_instance_name("1web").is_err());
        assert!(gcp_service_account("app@p.iam.gserviceaccount.com").is_ok());
        assert!(gcp_service_account("app").is_err());
        assert!(gcp_attribute_key("startup-script").is_ok());
        assert!(gcp_attribute_key("a/b").is_err());
        assert_eq!(
            guid("0F8FAD5B-D9CB-469F-A165-70867728950E").as_deref(),
            Ok("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
        assert!(guid("0f8fad5b-d9cb-469f-a165").is_err());
        assert!(azure_name("my_rg.(1)").is_ok());
        assert!(azure_name("a/b").is_err());
    }
}
