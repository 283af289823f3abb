//! Resolution of whole settings: precedence, defaults, every field's checks.

use super::*;
use crate::config::{TokenPolicy, validate};
use std::net::Ipv4Addr;
use std::time::Duration;

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
    assert_eq!(
        settings.http.put_reply_hop_limit, 2,
        "a container on a bridge gets its token"
    );
    assert_eq!(settings.shutdown_grace, Duration::from_secs(5));
    let tun = settings.tun.unwrap();
    assert_eq!(tun.device.name, "imds%d");
    assert_eq!(tun.device.mtu, 1500);
    assert_eq!(
        tun.device.queue_packets, 4096,
        "4 packets for each of 1024 connections"
    );
    assert_eq!(tun.stack.max_connections, 1024);
    assert_eq!(tun.stack.mtu, 1500);
    assert_eq!(tun.stack.address_v6, None);
    assert_eq!(
        tun.stack.first_data_timeout,
        settings.http.header_timeout.into(),
        "a silent client is held to the header timeout"
    );
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
                hop_limit: Some(0),
                ..Layer::default()
            },
            "config: hop_limit 0",
        ),
        (
            Layer {
                hop_limit: Some(65),
                ..Layer::default()
            },
            "config: hop_limit 65",
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
                mfa_code: Some(crate::secret::Secret::new("12345")),
                mfa_serial: Some("arn:aws:iam::123456789012:mfa/alice".into()),
                ..Layer::default()
            },
            "--mfa-code",
        ),
        (
            Layer {
                mfa_code: Some(crate::secret::Secret::new("123456")),
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
    let dir = crate::temp_dir::TempDir::new();
    let exact = dir.path().join("exact");
    std::fs::write(&exact, vec![b'u'; 16384]).unwrap();
    let over = dir.path().join("over");
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
    assert_eq!(settings.listen.listeners.len(), 1);
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
/// Every text field of the instance, one row each: a bad value names the field as a flag and as
/// a file key, and the flag's value wins without the file's being looked at.
#[test]
fn each_instance_field_takes_the_flag_over_the_file_and_names_itself() {
    type Set = fn(&mut Layer, String);
    let fields: [(&str, Set, &str, &str); 15] = [
        (
            "instance_id",
            |l, v| l.instance_id = Some(v),
            "i-0123456789abcdef0",
            "x-1",
        ),
        (
            "reservation_id",
            |l, v| l.reservation_id = Some(v),
            "r-0123456789abcdef0",
            "r-",
        ),
        (
            "ami_id",
            |l, v| l.ami_id = Some(v),
            "ami-0123456789abcdef0",
            "ami",
        ),
        (
            "instance_type",
            |l, v| l.instance_type = Some(v),
            "m5.large",
            "huge",
        ),
        (
            "account_id",
            |l, v| l.account_id = Some(v),
            "210987654321",
            "12",
        ),
        ("region", |l, v| l.region = Some(v), "eu-west-1", "mars"),
        (
            "availability_zone",
            |l, v| l.availability_zone = Some(v),
            "us-east-1b",
            "zone",
        ),
        (
            "availability_zone_id",
            |l, v| l.availability_zone_id = Some(v),
            "use1-az2",
            "az",
        ),
        ("hostname", |l, v| l.hostname = Some(v), "web", "a\nb"),
        (
            "local_hostname",
            |l, v| l.local_hostname = Some(v),
            "web.internal",
            "a\nb",
        ),
        (
            "local_ipv4",
            |l, v| l.local_ipv4 = Some(v),
            "10.9.8.7",
            "10.0.0.256",
        ),
        (
            "public_ipv4",
            |l, v| l.public_ipv4 = Some(v),
            "198.51.100.7",
            "nope",
        ),
        (
            "public_hostname",
            |l, v| l.public_hostname = Some(v),
            "web.example",
            "a\nb",
        ),
        (
            "mac",
            |l, v| l.mac = Some(v),
            "0e:00:00:00:00:01",
            "0e:zz:00:00:00:00",
        ),
        ("role_name", |l, v| l.role_name = Some(v), "web-role", "a/b"),
    ];
    for (key, set, good, bad) in fields {
        // A public hostname needs a public address; every other field ignores it.
        let layer = |value: &str| {
            let mut layer = Layer {
                public_ipv4: Some("203.0.113.9".into()),
                ..Layer::default()
            };
            set(&mut layer, value.to_owned());
            layer
        };
        let in_file = error_of(layer(bad), Layer::default());
        assert!(in_file.starts_with(&format!("config: {key} ")), "{in_file}");
        let as_flag = error_of(Layer::default(), layer(bad));
        let flag = format!("--{} ", key.replace('_', "-"));
        assert!(as_flag.starts_with(&flag), "{as_flag}");
        let settings = resolved(layer(bad), layer(good)).unwrap_or_else(|e| panic!("{key}: {e}"));
        let instance = format!("{:?}", settings.into_local().instance);
        assert!(instance.contains(good), "{key}: {good} in {instance}");
    }
}

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

#[test]
fn ipv6_is_off_by_default_and_needs_the_tun_and_an_ipv6_sized_mtu() {
    let settings = resolved(Layer::default(), Layer::default()).expect("defaults");
    assert!(!settings.tun.expect("a TUN").device.ipv6);
    let flags = Layer {
        ipv6: Some(true),
        ..Layer::default()
    };
    assert!(
        resolved(Layer::default(), flags)
            .expect("valid")
            .tun
            .expect("a TUN")
            .device
            .ipv6
    );

    let without_tun = Layer {
        ipv6: Some(true),
        no_tun: Some(true),
        listen: vec!["127.0.0.1:8080".parse().expect("address")],
        ..Layer::default()
    };
    let message = error_of(Layer::default(), without_tun);
    assert!(message.starts_with("--ipv6: "), "{message}");
    assert!(message.contains("--no-tun"), "{message}");

    let file = Layer {
        ipv6: Some(true),
        mtu: Some(1279),
        ..Layer::default()
    };
    let message = error_of(file, Layer::default());
    assert!(message.starts_with("config: ipv6: "), "{message}");
    assert!(message.contains("1280"), "{message}");
}

#[test]
fn container_endpoints_are_off_by_default_claimed_on_the_tun_and_refused_without_it() {
    use crate::platform::ExtraAddress;
    let settings = resolved(Layer::default(), Layer::default()).expect("defaults");
    let tun = settings.tun.expect("a TUN");
    assert!(tun.device.extra.is_empty());
    assert!(tun.stack.extra_addresses.is_empty());

    let token_dir = crate::temp_dir::TempDir::new();
    let token_file = token_dir.path().join("pod-token");
    std::fs::write(&token_file, "a-pod-identity-token").expect("write");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let flags = Layer {
        ecs: Some(true),
        eks_pod_identity: Some(true),
        eks_pod_identity_token_file: Some(token_file.clone()),
        ipv6: Some(true),
        ..Layer::default()
    };
    let tun = resolved(Layer::default(), flags)
        .expect("valid")
        .tun
        .expect("a TUN");
    assert_eq!(
        tun.device.extra,
        vec![
            ExtraAddress::Ecs,
            ExtraAddress::EksPodIdentity,
            ExtraAddress::EksPodIdentityV6
        ]
    );
    assert_eq!(
        tun.stack.extra_addresses,
        vec![
            "169.254.170.2"
                .parse::<std::net::IpAddr>()
                .expect("address"),
            "169.254.170.23".parse().expect("address"),
            "fd00:ec2::23".parse().expect("address"),
        ]
    );

    // From the file, without --ipv6: the IPv4 address only.
    let file = Layer {
        eks_pod_identity: Some(true),
        eks_pod_identity_token_file: Some(token_file.clone()),
        ..Layer::default()
    };
    let tun = resolved(file, Layer::default())
        .expect("valid")
        .tun
        .expect("a TUN");
    assert_eq!(tun.device.extra, vec![ExtraAddress::EksPodIdentity]);

    for (flags, origin) in [
        (
            Layer {
                ecs: Some(true),
                ..Layer::default()
            },
            "--ecs: ",
        ),
        (
            Layer {
                eks_pod_identity: Some(true),
                eks_pod_identity_token_file: Some(token_file.clone()),
                ..Layer::default()
            },
            "--eks-pod-identity: ",
        ),
    ] {
        let without_tun = Layer {
            no_tun: Some(true),
            listen: vec!["127.0.0.1:8080".parse().expect("address")],
            ..flags
        };
        let message = error_of(Layer::default(), without_tun);
        assert!(message.starts_with(origin), "{message}");
        assert!(message.contains("--no-tun"), "{message}");
    }
}

fn replay_layer(dir: &crate::temp_dir::TempDir, snapshot: &str) -> Layer {
    let path = dir.path().join("snapshot.json");
    std::fs::write(&path, snapshot).unwrap();
    Layer {
        replay: Some(path),
        ..Layer::default()
    }
}

const REPLAYED: &str = r#"{
  "imds_tun_snapshot": 1,
  "ec2": {"leaves": {
    "meta-data/iam/security-credentials/recorded-role": {"redacted": "credentials"},
    "user-data": "0123456789"
  }},
  "gce": {"document": {"instance": {}, "project": {"projectId": "recorded-project"}}}
}"#;

#[test]
fn a_replay_serves_the_recorded_role_and_gce_project_unless_flags_name_others() {
    let dir = crate::temp_dir::TempDir::new();
    let replayed = resolved(Layer::default(), replay_layer(&dir, REPLAYED)).unwrap();
    let local = replayed.into_local();
    assert_eq!(local.instance.role_name, "recorded-role");
    let replay = local.replay.expect("a replay");
    assert_eq!(replay.base_instance.role_name, "recorded-role");
    assert_eq!(
        local
            .gce
            .expect("GCE from the snapshot")
            .instance
            .project_id,
        "recorded-project"
    );
    assert!(replay.base_gce.is_some());

    let overridden = resolved(
        Layer::default(),
        Layer {
            role_name: Some("flagged".into()),
            gcp_project: Some("flagged-project".into()),
            ..replay_layer(&dir, REPLAYED)
        },
    )
    .unwrap()
    .into_local();
    assert_eq!(overridden.instance.role_name, "flagged");
    assert_eq!(
        overridden.gce.expect("GCE").instance.project_id,
        "flagged-project"
    );
    let replay = overridden.replay.expect("a replay");
    assert_eq!(replay.base_instance.role_name, "recorded-role");
    assert_eq!(
        replay.base_gce.as_ref().expect("GCE").project_id,
        "recorded-project"
    );
}

#[test]
fn a_broken_snapshot_is_one_line_naming_the_flag_and_the_json_path() {
    let dir = crate::temp_dir::TempDir::new();
    let message = error_of(
        Layer::default(),
        replay_layer(
            &dir,
            r#"{"imds_tun_snapshot": 1, "ec2": {"leaves": {"user-data": 42}}}"#,
        ),
    );
    assert!(message.starts_with("--replay "), "{message}");
    let from_file = error_of(
        replay_layer(
            &dir,
            r#"{"imds_tun_snapshot": 1, "ec2": {"leaves": {"user-data": 42}}}"#,
        ),
        Layer::default(),
    );
    assert!(from_file.starts_with("config: replay "), "{from_file}");
    assert!(
        message.contains(r#"$.ec2.leaves["user-data"]: "#),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");

    let message = error_of(
        Layer::default(),
        Layer {
            max_user_data_bytes: Some(4),
            ..replay_layer(&dir, REPLAYED)
        },
    );
    assert!(
        message.contains(r#"$.ec2.leaves["user-data"]: 10 bytes, more than the limit of 4"#),
        "{message}"
    );
}

#[test]
fn a_replay_with_an_upstream_is_refused_in_one_line() {
    let dir = crate::temp_dir::TempDir::new();
    let message = error_of(
        Layer::default(),
        Layer {
            upstream: Some("http://10.0.2.2:8080".into()),
            ..replay_layer(&dir, REPLAYED)
        },
    );
    assert_eq!(
        message,
        "--replay serves a snapshot here and --upstream forwards every request elsewhere; give \
         one of them"
    );
}
