//! Layering: for each field take the flag, else the file, else the default; then validate.
//!
//! Only the value that wins is validated, and its error names where it came from: a file value
//! is `config: <json_key>`, a flag is `--<flag-name>`. Checks spanning fields (zone in region,
//! `--no-tun` needs `--listen`) run after the choice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::defaults::{self, MachineDefaults};
use super::layer::{Imdsv2, Layer, PublicKeyLayer, Tag};
use super::named_file::{self, Cap, Opener};
use super::origin::{Origin, given, label, number, pick, text};
use super::validate;
use crate::credentials::naming::{self, RoleArn};
use crate::credentials::schedule;

use super::proxy::ListenerProtection;
use super::{
    Backend, ConfigError, CredentialSettings, Instance, LocalService, PublicKey, SecurityGroup,
    Settings, TokenPolicy, TunSettings,
};

/// Resolves the flag layer over the file layer over `machine`'s defaults. Files the layers
/// name (user data, token files) are read here, with `files`' rights.
pub fn resolve(
    file: &Layer,
    flags: &Layer,
    machine: &MachineDefaults,
    files: &Opener,
) -> Result<Settings, ConfigError> {
    let service = resolve_service(file, flags)?;
    let proxy = super::proxy::resolve(file, flags, &service.listen, service.tun.is_some(), files)?;
    let hardening = super::hardening::resolve(file, flags)?;
    let mut credentials = resolve_credentials(file, flags)?;
    credentials.fake_lifetime = service.credentials_lifetime;
    // The role in the tree is the assumed role's name unless --role-name says otherwise.
    let role_default = credentials
        .role_arn
        .as_ref()
        .map_or_else(|| defaults::ROLE_NAME.to_owned(), |arn| arn.name.clone());
    let instance = resolve_instance(file, flags, machine, role_default, files)?;
    // Every value is validated in both modes, so a bad setting is reported even when
    // forwarding; only the local mode keeps the instance and the credentials.
    let backend = match proxy.upstream {
        Some(upstream) => Backend::Upstream(upstream),
        None => Backend::Local(Box::new(LocalService {
            instance,
            token_policy: service.imdsv2,
            credentials,
        })),
    };
    Ok(Settings {
        tun: service.tun,
        listen: service.listen,
        max_connections: service.max_connections,
        shutdown_grace: service.shutdown_grace,
        backend,
        listeners: ListenerProtection {
            listen_token: proxy.listen_token,
            insecure_listen_without_token: proxy.insecure_listen_without_token,
        },
        hardening,
    })
}

/// Where the role credentials come from; see docs/credentials.md.
fn resolve_credentials(file: &Layer, flags: &Layer) -> Result<CredentialSettings, ConfigError> {
    let role_arn = text(
        pick(flags.role_arn.clone(), file.role_arn.clone()),
        "role_arn",
        RoleArn::parse,
    )?;
    let mock = pick(flags.mock_credentials, file.mock_credentials);
    if let (Some((true, mock_origin)), Some((arn, _))) = (mock, &role_arn) {
        return Err(ConfigError(format!(
            "{} and role_arn {:?}: fake credentials or a real role, not both",
            label(mock_origin, "mock_credentials"),
            arn.arn
        )));
    }
    let profile = text(
        pick(flags.profile.clone(), file.profile.clone()),
        "profile",
        validate::single_line,
    )?;
    let role_session_name = text(
        pick(
            flags.role_session_name.clone(),
            file.role_session_name.clone(),
        ),
        "role_session_name",
        naming::session_name,
    )?;
    let external_id = text(
        pick(flags.external_id.clone(), file.external_id.clone()),
        "external_id",
        validate::external_id,
    )?;
    // STS's bounds, checked before any call: AssumeRole 15 min-12 h (the role's own maximum
    // may be lower; STS says so), GetSessionToken 15 min-36 h.
    let duration_range = if role_arn.is_some() {
        900..=43200
    } else {
        900..=129_600
    };
    let duration = match pick(flags.duration, file.duration) {
        None => None,
        chosen => Some(Duration::from_secs(number(
            chosen,
            "duration",
            duration_range,
            "seconds",
            0,
        )?)),
    };
    let mfa_serial = text(
        pick(flags.mfa_serial.clone(), file.mfa_serial.clone()),
        "mfa_serial",
        validate::mfa_serial,
    )?;
    let mfa_code = match &flags.mfa_code {
        None => None,
        Some(code) => {
            validate::mfa_code(code.expose())
                .map_err(|expected| ConfigError(format!("--mfa-code: {expected}")))?;
            if mfa_serial.is_none() {
                return Err(ConfigError(
                    "--mfa-code: also give --mfa-serial (the MFA device the code is from)".into(),
                ));
            }
            Some(code.clone())
        }
    };
    let refresh_margin = number(
        pick(flags.refresh_margin, file.refresh_margin),
        "refresh_margin",
        // The floor is EC2's own guarantee, below which the schedule would raise it anyway.
        schedule::EC2_MIN_MARGIN.as_secs()..=43200,
        "seconds",
        schedule::DEFAULT_REFRESH_MARGIN.as_secs(),
    )?;
    let retry_base = number(
        pick(flags.retry_base_ms, file.retry_base_ms),
        "retry_base_ms",
        10..=60_000,
        "milliseconds",
        defaults::RETRY_BASE_MS,
    )?;
    let max_lifetime = match pick(
        flags.credentials_max_lifetime,
        file.credentials_max_lifetime,
    ) {
        None => None,
        chosen => Some(Duration::from_secs(number(
            chosen,
            "credentials_max_lifetime",
            4..=43200,
            "seconds",
            0,
        )?)),
    };
    Ok(CredentialSettings {
        mock: mock.is_some_and(|(mock, _)| mock),
        role_arn: role_arn.map(|(arn, _)| arn),
        profile: profile.map(|(profile, _)| profile),
        role_session_name: role_session_name.map(|(name, _)| name),
        external_id: external_id.map(|(id, _)| id),
        duration,
        mfa_serial: mfa_serial.map(|(serial, _)| serial),
        mfa_code,
        refresh_margin: Duration::from_secs(refresh_margin),
        retry_base: Duration::from_millis(retry_base),
        max_lifetime,
        // Set with the service settings, where the flag lives.
        fake_lifetime: Duration::ZERO,
    })
}

/// The service half of [`Settings`], resolved before the instance.
struct Service {
    tun: Option<TunSettings>,
    listen: Vec<SocketAddr>,
    max_connections: usize,
    shutdown_grace: Duration,
    imdsv2: TokenPolicy,
    credentials_lifetime: Duration,
}

/// Everything but the instance: listeners, TUN, limits, token mode.
fn resolve_service(file: &Layer, flags: &Layer) -> Result<Service, ConfigError> {
    // Parsed at the edge (clap, or the file's `listen`), so only the choice is left.
    let listen = pick(given(&flags.listen), given(&file.listen))
        .map_or_else(Vec::new, |(addresses, _)| addresses);
    let no_tun = pick(flags.no_tun, file.no_tun);
    if let Some((true, origin)) = no_tun
        && listen.is_empty()
    {
        return Err(ConfigError(format!(
            "{}: nothing would be served; give at least one --listen ADDR:PORT",
            label(origin, "no_tun")
        )));
    }
    let tun_name = text(
        pick(flags.tun_name.clone(), file.tun_name.clone()),
        "tun_name",
        validate::tun_name,
    )?
    .map_or_else(|| defaults::TUN_NAME.to_owned(), |(name, _)| name);
    // 576 is the smallest MTU every IPv4 host must accept; above 65535 an IP packet cannot go.
    let mtu = number(
        pick(flags.mtu, file.mtu),
        "mtu",
        576..=65535,
        "bytes",
        defaults::MTU,
    )?;
    let max_connections = number(
        pick(flags.max_connections, file.max_connections),
        "max_connections",
        1..=65536,
        "connections",
        defaults::MAX_CONNECTIONS,
    )?;
    let shutdown_grace = number(
        pick(flags.shutdown_grace, file.shutdown_grace),
        "shutdown_grace",
        0..=3600,
        "seconds",
        defaults::SHUTDOWN_GRACE_SECONDS,
    )?;
    // At least 30 minutes, so credentials outlive the 15-minute rotation margin; at most 12
    // hours, the longest an instance-profile session lasts.
    let credentials_lifetime = number(
        pick(flags.credentials_lifetime, file.credentials_lifetime),
        "credentials_lifetime",
        1800..=43200,
        "seconds",
        defaults::CREDENTIALS_LIFETIME_SECONDS,
    )?;
    let imdsv2 = match pick(flags.imdsv2, file.imdsv2) {
        None | Some((Imdsv2::Optional, _)) => TokenPolicy::Optional,
        Some((Imdsv2::Required, _)) => TokenPolicy::Required,
    };

    let tun_disabled = no_tun.is_some_and(|(disabled, _)| disabled);
    Ok(Service {
        tun: (!tun_disabled).then(|| TunSettings {
            name: tun_name,
            mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        }),
        listen,
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_secs(shutdown_grace),
        imdsv2,
        credentials_lifetime: Duration::from_secs(credentials_lifetime),
    })
}

fn resolve_instance(
    file: &Layer,
    flags: &Layer,
    machine: &MachineDefaults,
    role_default: String,
    files: &Opener,
) -> Result<Instance, ConfigError> {
    let user_data = resolve_user_data(file, flags, files)?;
    let or = |chosen: Option<(String, Origin)>, default: String| {
        chosen.map_or(default, |(value, _)| value)
    };
    let instance_id = or(
        text(
            pick(flags.instance_id.clone(), file.instance_id.clone()),
            "instance_id",
            validate::instance_id,
        )?,
        machine.instance_id(),
    );
    let reservation_id = or(
        text(
            pick(flags.reservation_id.clone(), file.reservation_id.clone()),
            "reservation_id",
            validate::reservation_id,
        )?,
        machine.reservation_id(),
    );
    let ami_id = or(
        text(
            pick(flags.ami_id.clone(), file.ami_id.clone()),
            "ami_id",
            validate::ami_id,
        )?,
        machine.ami_id(),
    );
    let instance_type = or(
        text(
            pick(flags.instance_type.clone(), file.instance_type.clone()),
            "instance_type",
            validate::instance_type,
        )?,
        defaults::INSTANCE_TYPE.to_owned(),
    );
    let account_id = or(
        text(
            pick(flags.account_id.clone(), file.account_id.clone()),
            "account_id",
            validate::account_id,
        )?,
        defaults::ACCOUNT_ID.to_owned(),
    );

    let (region, availability_zone) = resolve_placement(
        text(
            pick(flags.region.clone(), file.region.clone()),
            "region",
            validate::region,
        )?,
        text(
            pick(
                flags.availability_zone.clone(),
                file.availability_zone.clone(),
            ),
            "availability_zone",
            validate::availability_zone,
        )?,
    )?;
    let availability_zone_id = or(
        text(
            pick(
                flags.availability_zone_id.clone(),
                file.availability_zone_id.clone(),
            ),
            "availability_zone_id",
            validate::availability_zone_id,
        )?,
        defaults::availability_zone_id(&region, &availability_zone),
    );

    let hostname = or(
        text(
            pick(flags.hostname.clone(), file.hostname.clone()),
            "hostname",
            validate::single_line,
        )?,
        machine.hostname().to_owned(),
    );
    let local_hostname = or(
        text(
            pick(flags.local_hostname.clone(), file.local_hostname.clone()),
            "local_hostname",
            validate::single_line,
        )?,
        hostname.clone(),
    );
    let local_ipv4 = text(
        pick(flags.local_ipv4.clone(), file.local_ipv4.clone()),
        "local_ipv4",
        validate::ipv4,
    )?
    .map_or_else(|| machine.local_ipv4(), |(ip, _)| ip);
    let public_ipv4 = text(
        pick(flags.public_ipv4.clone(), file.public_ipv4.clone()),
        "public_ipv4",
        validate::ipv4,
    )?
    .map(|(ip, _)| ip);
    let public_hostname = match (
        text(
            pick(flags.public_hostname.clone(), file.public_hostname.clone()),
            "public_hostname",
            validate::single_line,
        )?,
        public_ipv4,
    ) {
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
    let mac = or(
        text(
            pick(flags.mac.clone(), file.mac.clone()),
            "mac",
            validate::mac,
        )?,
        machine.mac(),
    );
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
                text(
                    Some((name.clone(), origin)),
                    "security_groups",
                    validate::single_line,
                )?;
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

    let role_name = or(
        text(
            pick(flags.role_name.clone(), file.role_name.clone()),
            "role_name",
            validate::path_segment,
        )?,
        role_default,
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn machine() -> MachineDefaults {
        MachineDefaults::from_parts(
            "5d41402abc4b2a76b9719d911017c592",
            "devbox",
            Some(Ipv4Addr::new(10, 1, 2, 3)),
        )
    }

    fn resolved(file: Layer, flags: Layer) -> Result<Settings, ConfigError> {
        resolve(&file, &flags, &machine(), &Opener::OwnRights)
    }

    fn error_of(file: Layer, flags: Layer) -> String {
        match resolved(file, flags) {
            Ok(_) => panic!("expected a configuration error"),
            Err(error) => error.0,
        }
    }

    #[test]
    fn defaults_are_realistic_and_consistent() {
        let settings = resolved(Layer::default(), Layer::default()).unwrap();
        let instance = &settings.local().expect("a local service").instance;
        assert!(validate::instance_id(&instance.instance_id).is_ok());
        assert_eq!(instance.instance_id.len(), 19);
        assert_eq!(instance.region, "us-east-1");
        assert_eq!(instance.availability_zone, "us-east-1a");
        assert_eq!(instance.availability_zone_id, "use1-az1");
        assert_eq!(instance.account_id, "123456789012");
        assert_eq!(instance.instance_type, "t3.micro");
        assert_eq!(instance.hostname, "devbox");
        assert_eq!(instance.local_ipv4, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(instance.public_ipv4, None);
        assert_eq!(instance.public_hostname, None);
        assert_eq!(instance.role_name, "imds-tun");
        assert_eq!(instance.vpc_ipv4_cidr_block, "10.1.0.0/16");
        assert_eq!(instance.user_data, None);
        assert_eq!(
            settings.local().expect("a local service").token_policy,
            TokenPolicy::Optional
        );
        assert_eq!(settings.max_connections, 1024);
        assert_eq!(settings.shutdown_grace, Duration::from_secs(5));
        let tun = settings.tun.unwrap();
        assert_eq!(tun.name, "imds%d");
        assert_eq!(tun.mtu, 1500);
    }

    #[test]
    fn defaults_are_stable_across_two_resolutions() {
        let first = resolved(Layer::default(), Layer::default()).unwrap();
        let second = resolved(Layer::default(), Layer::default()).unwrap();
        assert_eq!(
            first.local().expect("a local service").instance,
            second.local().expect("a local service").instance
        );
        let probed = MachineDefaults::probe();
        let a = resolve(
            &Layer::default(),
            &Layer::default(),
            &probed,
            &Opener::OwnRights,
        )
        .unwrap();
        let b = resolve(
            &Layer::default(),
            &Layer::default(),
            &MachineDefaults::probe(),
            &Opener::OwnRights,
        )
        .unwrap();
        assert_eq!(a.into_local().instance, b.into_local().instance);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file = Layer {
            instance_type: Some("m5.large".into()),
            region: Some("eu-west-1".into()),
            ..Layer::default()
        };
        let flags = Layer {
            instance_type: Some("c7g.xlarge".into()),
            ..Layer::default()
        };
        let instance = resolved(file, flags).unwrap().into_local().instance;
        assert_eq!(instance.instance_type, "c7g.xlarge");
        assert_eq!(instance.region, "eu-west-1");
        assert_eq!(instance.availability_zone, "eu-west-1a");
        assert_eq!(instance.account_id, "123456789012");
    }

    #[test]
    fn bad_instance_id_in_file_names_the_field() {
        let file = Layer {
            instance_id: Some("x-123".into()),
            ..Layer::default()
        };
        assert_eq!(
            error_of(file, Layer::default()),
            "config: instance_id \"x-123\": expected \"i-\" followed by 8 or 17 lower-case hex digits"
        );
    }

    #[test]
    fn bad_flag_value_names_the_flag() {
        let flags = Layer {
            account_id: Some("12".into()),
            ..Layer::default()
        };
        let message = error_of(Layer::default(), flags);
        assert!(message.starts_with("--account-id \"12\""), "{message}");
    }

    #[test]
    fn zone_outside_region_is_an_error() {
        let file = Layer {
            region: Some("us-east-1".into()),
            availability_zone: Some("eu-west-1a".into()),
            ..Layer::default()
        };
        let message = error_of(file, Layer::default());
        assert!(
            message.starts_with("config: availability_zone"),
            "{message}"
        );
        assert!(message.contains("us-east-1"), "{message}");
    }

    #[test]
    fn zone_of_a_longer_region_number_is_not_in_the_region() {
        let file = Layer {
            region: Some("us-east-1".into()),
            availability_zone: Some("us-east-10a".into()),
            ..Layer::default()
        };
        let message = error_of(file, Layer::default());
        assert!(
            message.starts_with("config: availability_zone"),
            "{message}"
        );
    }

    #[test]
    fn zone_alone_implies_its_region() {
        let file = Layer {
            availability_zone: Some("ap-southeast-2c".into()),
            ..Layer::default()
        };
        let instance = resolved(file, Layer::default())
            .unwrap()
            .into_local()
            .instance;
        assert_eq!(instance.region, "ap-southeast-2");
        assert_eq!(instance.availability_zone_id, "apse2-az3");
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases: Vec<(Layer, &str)> = vec![
            (
                Layer {
                    local_ipv4: Some("10.0.0.256".into()),
                    ..Layer::default()
                },
                "config: local_ipv4",
            ),
            (
                Layer {
                    public_ipv4: Some("nope".into()),
                    ..Layer::default()
                },
                "config: public_ipv4",
            ),
            (
                Layer {
                    mac: Some("0e:zz:00:00:00:00".into()),
                    ..Layer::default()
                },
                "config: mac",
            ),
            (
                Layer {
                    account_id: Some("1234".into()),
                    ..Layer::default()
                },
                "config: account_id",
            ),
            (
                Layer {
                    tag: vec!["=v".parse().unwrap()],
                    ..Layer::default()
                },
                "config: tag key",
            ),
            (
                Layer {
                    max_connections: Some(0),
                    ..Layer::default()
                },
                "config: max_connections 0",
            ),
            (
                Layer {
                    mtu: Some(100_000),
                    ..Layer::default()
                },
                "config: mtu",
            ),
            (
                Layer {
                    credentials_lifetime: Some(60),
                    ..Layer::default()
                },
                "config: credentials_lifetime",
            ),
            (
                Layer {
                    role_name: Some("a/b".into()),
                    ..Layer::default()
                },
                "config: role_name",
            ),
            (
                Layer {
                    region: Some("mars".into()),
                    ..Layer::default()
                },
                "config: region",
            ),
        ];
        for (file, field) in cases {
            let message = error_of(file, Layer::default());
            assert!(message.starts_with(field), "{field}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }

    #[test]
    fn credentials_default_to_the_callers_session_with_a_fifteen_minute_margin() {
        let settings = resolved(Layer::default(), Layer::default()).unwrap();
        let credentials = &settings.local().expect("a local service").credentials;
        assert!(!credentials.mock);
        assert_eq!(credentials.role_arn, None);
        assert_eq!(credentials.refresh_margin, Duration::from_secs(900));
        assert_eq!(credentials.retry_base, Duration::from_secs(1));
        assert_eq!(
            credentials.duration_or_default(),
            Duration::from_secs(43200)
        );
        assert_eq!(
            settings
                .local()
                .expect("a local service")
                .instance
                .role_name,
            "imds-tun"
        );
    }

    #[test]
    fn role_name_is_the_arns_last_segment_unless_given() {
        let flags = Layer {
            role_arn: Some("arn:aws:iam::123456789012:role/team/app".into()),
            ..Layer::default()
        };
        let settings = resolved(Layer::default(), flags.clone()).unwrap();
        assert_eq!(
            settings
                .local()
                .expect("a local service")
                .instance
                .role_name,
            "app"
        );
        assert_eq!(
            settings
                .local()
                .expect("a local service")
                .credentials
                .duration_or_default(),
            Duration::from_secs(3600)
        );
        let flags = Layer {
            role_name: Some("web".into()),
            ..flags
        };
        assert_eq!(
            resolved(Layer::default(), flags)
                .unwrap()
                .into_local()
                .instance
                .role_name,
            "web"
        );
    }

    #[test]
    fn malformed_role_arn_names_the_flag() {
        let flags = Layer {
            role_arn: Some("arn:aws:iam::123:role/app".into()),
            ..Layer::default()
        };
        let message = error_of(Layer::default(), flags);
        assert!(
            message.starts_with("--role-arn \"arn:aws:iam::123:role/app\""),
            "{message}"
        );
    }

    #[test]
    fn duration_bounds_depend_on_the_call() {
        let with_role = |seconds| Layer {
            role_arn: Some("arn:aws:iam::123456789012:role/app".into()),
            duration: Some(seconds),
            ..Layer::default()
        };
        assert!(resolved(Layer::default(), with_role(900)).is_ok());
        assert!(resolved(Layer::default(), with_role(43200)).is_ok());
        let message = error_of(Layer::default(), with_role(899));
        assert_eq!(message, "--duration 899: expected 900 to 43200 seconds");
        assert!(error_of(Layer::default(), with_role(43201)).starts_with("--duration"));
        let session = Layer {
            duration: Some(129_600),
            ..Layer::default()
        };
        assert!(resolved(Layer::default(), session).is_ok());
    }

    #[test]
    fn credential_settings_are_checked() {
        let cases: Vec<(Layer, &str)> = vec![
            (
                Layer {
                    role_session_name: Some("has space".into()),
                    ..Layer::default()
                },
                "--role-session-name",
            ),
            (
                Layer {
                    mfa_code: Some(crate::credentials::Secret::new("12345")),
                    mfa_serial: Some("arn:aws:iam::123456789012:mfa/alice".into()),
                    ..Layer::default()
                },
                "--mfa-code",
            ),
            (
                Layer {
                    mfa_code: Some(crate::credentials::Secret::new("123456")),
                    ..Layer::default()
                },
                "--mfa-code",
            ),
            (
                Layer {
                    refresh_margin: Some(60),
                    ..Layer::default()
                },
                "--refresh-margin 60",
            ),
            (
                Layer {
                    mock_credentials: Some(true),
                    role_arn: Some("arn:aws:iam::123456789012:role/app".into()),
                    ..Layer::default()
                },
                "--mock-credentials",
            ),
            (
                Layer {
                    external_id: Some("x".into()),
                    ..Layer::default()
                },
                "--external-id",
            ),
        ];
        for (flags, field) in cases {
            let message = error_of(Layer::default(), flags);
            assert!(message.starts_with(field), "{field}: {message}");
            assert!(
                !message.contains("12345\""),
                "the code is not echoed: {message}"
            );
        }
    }

    #[test]
    fn unreadable_user_data_file_names_the_path() {
        let flags = Layer {
            user_data: Some("/nonexistent/user-data.sh".into()),
            ..Layer::default()
        };
        let message = error_of(Layer::default(), flags);
        assert!(message.starts_with("--user-data"), "{message}");
        assert!(message.contains("/nonexistent/user-data.sh"), "{message}");
    }

    #[test]
    fn user_data_is_capped_at_ec2s_16_kib_unless_raised() {
        let dir = std::env::temp_dir().join(format!("imds-tun-ud-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exact = dir.join("exact");
        std::fs::write(&exact, vec![b'u'; 16384]).unwrap();
        let over = dir.join("over");
        std::fs::write(&over, vec![b'u'; 16385]).unwrap();
        let with = |path: &std::path::Path, cap: Option<u64>| Layer {
            user_data: Some(path.to_path_buf()),
            max_user_data_bytes: cap,
            ..Layer::default()
        };

        let served = resolved(Layer::default(), with(&exact, None)).unwrap();
        assert_eq!(
            served
                .local()
                .expect("a local service")
                .instance
                .user_data
                .as_ref()
                .map(|data| data.len()),
            Some(16384)
        );
        let message = error_of(Layer::default(), with(&over, None));
        assert!(message.starts_with("--user-data "), "{message}");
        assert!(message.contains("16385 bytes"), "{message}");
        assert!(message.contains("limit of 16384 bytes"), "{message}");
        assert!(message.contains("--max-user-data-bytes"), "{message}");
        let raised = resolved(Layer::default(), with(&over, Some(20000))).unwrap();
        assert_eq!(
            raised
                .local()
                .expect("a local service")
                .instance
                .user_data
                .as_ref()
                .map(|data| data.len()),
            Some(16385)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn inline_user_data_has_the_same_cap() {
        let file = Layer {
            user_data_text: Some("x".repeat(16385)),
            ..Layer::default()
        };
        let message = error_of(file.clone(), Layer::default());
        assert!(
            message.starts_with("config: user_data_text: 16385 bytes"),
            "{message}"
        );
        let raised = Layer {
            max_user_data_bytes: Some(16385),
            ..file
        };
        assert!(resolved(raised, Layer::default()).is_ok());
    }

    #[test]
    fn max_user_data_bytes_is_bounded() {
        for (value, ok) in [(0, false), (1, true), (1_048_576, true), (1_048_577, false)] {
            let flags = Layer {
                max_user_data_bytes: Some(value),
                ..Layer::default()
            };
            match resolved(Layer::default(), flags) {
                Ok(_) => assert!(ok, "{value} accepted"),
                Err(error) => {
                    assert!(!ok, "{value}: {}", error.0);
                    assert_eq!(
                        error.0,
                        format!("--max-user-data-bytes {value}: expected 1 to 1048576 bytes")
                    );
                }
            }
        }
    }

    #[test]
    fn user_data_file_that_is_a_device_is_refused() {
        let flags = Layer {
            user_data: Some("/dev/zero".into()),
            ..Layer::default()
        };
        assert_eq!(
            error_of(Layer::default(), flags),
            "--user-data /dev/zero: is a character device, not a regular file; imds-tun reads \
             only regular files"
        );
    }

    #[test]
    fn no_tun_without_listen_is_an_error() {
        let flags = Layer {
            no_tun: Some(true),
            ..Layer::default()
        };
        let message = error_of(Layer::default(), flags);
        assert!(message.starts_with("--no-tun"), "{message}");
        let flags = Layer {
            no_tun: Some(true),
            listen: vec!["127.0.0.1:8080".parse().unwrap()],
            ..Layer::default()
        };
        let settings = resolved(Layer::default(), flags).unwrap();
        assert!(settings.tun.is_none());
        assert_eq!(settings.listen.len(), 1);
    }

    #[test]
    fn flag_tags_override_file_tags_key_by_key() {
        let file = Layer {
            tag: vec!["Name=file".parse().unwrap(), "Team=infra".parse().unwrap()],
            ..Layer::default()
        };
        let flags = Layer {
            tag: vec!["Name=flag".parse().unwrap()],
            ..Layer::default()
        };
        let tags = resolved(file, flags).unwrap().into_local().instance.tags;
        assert_eq!(tags["Name"], "flag");
        assert_eq!(tags["Team"], "infra");
    }

    /// No exception table: the flag is the key with `-`, whichever the setting.
    #[test]
    fn every_origin_is_the_flag_name_or_the_same_key() {
        let in_file = |layer: Layer| error_of(layer, Layer::default());
        let flag = |layer: Layer| error_of(Layer::default(), layer);
        let grace = Layer {
            shutdown_grace: Some(4000),
            ..Layer::default()
        };
        assert!(in_file(grace.clone()).starts_with("config: shutdown_grace 4000"));
        assert!(flag(grace).starts_with("--shutdown-grace 4000"));
        let timeout = Layer {
            header_timeout: Some(0),
            ..Layer::default()
        };
        assert!(in_file(timeout.clone()).starts_with("config: header_timeout 0"));
        assert!(flag(timeout).starts_with("--header-timeout 0"));
        let tag = Layer {
            tag: vec!["a/b=c".parse().unwrap()],
            ..Layer::default()
        };
        assert!(in_file(tag.clone()).starts_with("config: tag key \"a/b\""));
        assert!(flag(tag).starts_with("--tag key \"a/b\""));
        let user_data = Layer {
            user_data: Some("/nonexistent/ud".into()),
            ..Layer::default()
        };
        assert!(in_file(user_data.clone()).starts_with("config: user_data /nonexistent/ud"));
        assert!(flag(user_data).starts_with("--user-data /nonexistent/ud"));
    }

    #[test]
    fn user_data_and_user_data_text_are_one_or_the_other() {
        let file = Layer {
            user_data: Some("/nonexistent/ud".into()),
            user_data_text: Some("inline".into()),
            ..Layer::default()
        };
        assert_eq!(
            error_of(file, Layer::default()),
            "config: user_data and user_data_text both given; keep one"
        );
    }

    #[test]
    fn public_ipv4_brings_a_public_hostname() {
        let file = Layer {
            public_ipv4: Some("54.1.2.3".into()),
            ..Layer::default()
        };
        let instance = resolved(file, Layer::default())
            .unwrap()
            .into_local()
            .instance;
        assert_eq!(
            instance.public_hostname.as_deref(),
            Some("ec2-54-1-2-3.compute-1.amazonaws.com")
        );
    }

    #[test]
    fn inline_user_data_is_served_as_bytes() {
        let file = Layer {
            user_data_text: Some("#!/bin/sh\necho hi\n".into()),
            ..Layer::default()
        };
        let instance = resolved(file, Layer::default())
            .unwrap()
            .into_local()
            .instance;
        assert_eq!(
            instance.user_data.as_deref(),
            Some(&b"#!/bin/sh\necho hi\n"[..])
        );
    }
}
