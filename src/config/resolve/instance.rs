//! The instance the metadata service describes (`imds::Instance`): identity, placement,
//! network, IAM role, key, tags and user data, every value consistent with the others.

use std::collections::BTreeMap;

use super::super::defaults::{self, MachineDefaults};
use super::super::layer::{Layer, PublicKeyLayer, Tag};
use super::super::named_file::{self, Cap, Opener};
use super::super::origin::{Origin, label, number, pick, text};
use super::super::validate::{self, ipv4, single_line};
use super::super::{ConfigError, Instance, PublicKey, SecurityGroup};

pub(super) fn resolve_instance(
    file: &Layer,
    flags: &Layer,
    machine: &MachineDefaults,
    role_default: String,
    files: &Opener,
) -> Result<Instance, ConfigError> {
    let user_data = resolve_user_data(file, flags, files)?;
    // One value: the flag over the file, checked, an error labelled with the field's own name
    // (`--instance-id` or `config: instance_id`); given a third argument, the default when
    // neither sets it.
    macro_rules! chosen {
        ($field:ident, $check:expr) => {
            text(
                pick(flags.$field.clone(), file.$field.clone()),
                stringify!($field),
                $check,
            )?
        };
        ($field:ident, $check:expr, $default:expr) => {
            chosen!($field, $check).map_or_else(|| $default, |(value, _)| value)
        };
    }
    let instance_id = chosen!(instance_id, validate::instance_id, machine.instance_id());
    let reservation_id = chosen!(
        reservation_id,
        validate::reservation_id,
        machine.reservation_id()
    );
    let ami_id = chosen!(ami_id, validate::ami_id, machine.ami_id());
    let instance_type = chosen!(
        instance_type,
        validate::instance_type,
        defaults::INSTANCE_TYPE.to_owned()
    );
    let account_id = chosen!(
        account_id,
        validate::account_id,
        defaults::ACCOUNT_ID.to_owned()
    );
    let (region, availability_zone) = resolve_placement(
        chosen!(region, validate::region),
        chosen!(availability_zone, validate::availability_zone),
    )?;
    let availability_zone_id = chosen!(
        availability_zone_id,
        validate::availability_zone_id,
        defaults::availability_zone_id(&region, &availability_zone)
    );
    let hostname = chosen!(hostname, single_line, machine.hostname().to_owned());
    let local_hostname = chosen!(local_hostname, single_line, hostname.clone());
    let local_ipv4 = chosen!(local_ipv4, ipv4, machine.local_ipv4());
    let public_ipv4 = chosen!(public_ipv4, ipv4).map(|(ip, _)| ip);
    let public_hostname = match (chosen!(public_hostname, single_line), public_ipv4) {
        (Some((name, _)), Some(_)) => Some(name),
        (Some((name, origin)), None) => {
            return Err(ConfigError(format!(
                "{} {name:?}: a public hostname needs a public_ipv4 too",
                label(origin, "public_hostname")
            )));
        }
        (None, Some(ip)) => Some(defaults::public_hostname(ip, &region)),
        (None, None) => None,
    };
    let mac = chosen!(mac, validate::mac, machine.mac());
    let (vpc_ipv4_cidr_block, subnet_ipv4_cidr_block) = defaults::vpc_and_subnet_cidrs(local_ipv4);

    let security_groups = match pick(flags.security_groups.clone(), file.security_groups.clone()) {
        None => vec![defaults::SECURITY_GROUP.to_owned()],
        Some((names, origin)) => {
            if names.is_empty() {
                return Err(ConfigError(format!(
                    "{} []: expected at least one security group name",
                    label(origin, "security_groups")
                )));
            }
            for name in &names {
                text(Some((name.clone(), origin)), "security_groups", single_line)?;
            }
            names
        }
    }
    .into_iter()
    .map(|name| SecurityGroup {
        id: machine.security_group_id(&name),
        name,
    })
    .collect();

    let role_name = chosen!(role_name, validate::path_segment, role_default);
    let public_key = resolve_public_key(pick(flags.public_key.clone(), file.public_key.clone()))?;
    let tags = resolve_tags(&file.tag, &flags.tag)?;

    Ok(Instance {
        instance_id,
        reservation_id,
        ami_id,
        instance_type,
        account_id,
        region,
        availability_zone,
        availability_zone_id,
        architecture: host_architecture().to_owned(),
        hostname,
        local_hostname,
        local_ipv4,
        public_ipv4,
        public_hostname,
        mac,
        interface_id: machine.interface_id(),
        subnet_id: machine.subnet_id(),
        vpc_id: machine.vpc_id(),
        subnet_ipv4_cidr_block,
        vpc_ipv4_cidr_block,
        security_groups,
        role_name,
        instance_profile_id: machine.instance_profile_id(),
        public_key,
        tags,
        user_data,
    })
}

/// Region and zone must agree. Either one alone implies the other (`us-west-2` → `us-west-2a`,
/// `us-west-2c` → `us-west-2`); neither gives `us-east-1`/`us-east-1a`.
fn resolve_placement(
    region: Option<(String, Origin)>,
    zone: Option<(String, Origin)>,
) -> Result<(String, String), ConfigError> {
    match (region, zone) {
        (None, None) => Ok((
            defaults::REGION.to_owned(),
            defaults::AVAILABILITY_ZONE.to_owned(),
        )),
        (Some((region, _)), None) => {
            let zone = format!("{region}a");
            Ok((region, zone))
        }
        (None, Some((zone, origin))) => {
            let region = zone.trim_end_matches(|c: char| c.is_ascii_lowercase());
            validate::region(region)
                .map(|region| (region, zone.clone()))
                .map_err(|_| {
                    ConfigError(format!(
                        "{} {zone:?}: cannot tell its region; set region as well",
                        label(origin, "availability_zone")
                    ))
                })
        }
        (Some((region, _)), Some((zone, origin))) => {
            // After the region comes the zone letter, or `-` for a local zone
            // (`us-east-1-bos-1a`); `us-east-10a` is not a zone of `us-east-1`.
            let in_region = zone
                .strip_prefix(region.as_str())
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '-'));
            if in_region {
                Ok((region, zone))
            } else {
                Err(ConfigError(format!(
                    "{} {zone:?}: expected a zone of region {region:?} (its name starts with the region)",
                    label(origin, "availability_zone")
                )))
            }
        }
    }
}

fn resolve_public_key(
    chosen: Option<(PublicKeyLayer, Origin)>,
) -> Result<Option<PublicKey>, ConfigError> {
    let Some((key, origin)) = chosen else {
        return Ok(None);
    };
    let invalid = |what: &str, value: &str, expected: String| {
        ConfigError(format!(
            "{}.{what} {value:?}: {expected}",
            label(origin, "public_key")
        ))
    };
    let name = validate::single_line(&key.name).map_err(|e| invalid("name", &key.name, e))?;
    let openssh_key = validate::single_line(&key.openssh_key)
        .map_err(|e| invalid("openssh_key", &key.openssh_key, e))?;
    Ok(Some(PublicKey { name, openssh_key }))
}

/// File tags, then flag tags on top (a later tag replaces an earlier one with the same key).
fn resolve_tags(file: &[Tag], flags: &[Tag]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut tags = BTreeMap::new();
    for (layer, origin) in [(file, Origin::File), (flags, Origin::Flag)] {
        for Tag { key, value } in layer {
            validate::path_segment(key).map_err(|expected| {
                ConfigError(format!("{} key {key:?}: {expected}", label(origin, "tag")))
            })?;
            tags.insert(key.clone(), value.clone());
        }
    }
    Ok(tags)
}

/// `--user-data FILE` beats the file's `user_data` (a path, like the flag) or inline
/// `user_data_text` (not both); all three are capped at `--max-user-data-bytes` (EC2's 16 KiB
/// by default).
fn resolve_user_data(
    file: &Layer,
    flags: &Layer,
    files: &Opener,
) -> Result<Option<bytes::Bytes>, ConfigError> {
    if file.user_data.is_some() && file.user_data_text.is_some() {
        return Err(ConfigError(
            "config: user_data and user_data_text both given; keep one".into(),
        ));
    }
    let cap = Cap {
        bytes: number(
            pick(flags.max_user_data_bytes, file.max_user_data_bytes),
            "max_user_data_bytes",
            1..=defaults::MAX_USER_DATA_BYTES_LIMIT,
            "bytes",
            defaults::MAX_USER_DATA_BYTES,
        )?,
        advice: "EC2 accepts at most 16384 bytes of user data; allow more with \
                 --max-user-data-bytes, up to 1048576",
    };
    let path = pick(flags.user_data.clone(), file.user_data.clone());
    if let Some((path, origin)) = path {
        return named_file::read(&path, &label(origin, "user_data"), files, cap)
            .map(|bytes| Some(bytes::Bytes::from(bytes)))
            .map_err(|error| ConfigError(error.to_string()));
    }
    match &file.user_data_text {
        Some(inline) if inline.len() as u64 > cap.bytes => Err(ConfigError(format!(
            "config: user_data_text: {} bytes, more than the limit of {} bytes ({})",
            inline.len(),
            cap.bytes,
            cap.advice
        ))),
        inline => Ok(inline.clone().map(bytes::Bytes::from)),
    }
}

/// EC2's name for the architecture this binary runs on.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "i386",
        other => other,
    }
}
