//! The container endpoints' settings: ECS ids and the Pod Identity token file.

use std::path::{Path, PathBuf};

use super::*;
use crate::temp_dir::TempDir;

fn flags_with(ids: &[&str]) -> Layer {
    Layer {
        ecs_credentials: ids.iter().map(|id| (*id).to_owned()).collect(),
        ..Layer::default()
    }
}

fn ecs_error(ids: &[&str]) -> String {
    match resolve_ecs(&Layer::default(), &flags_with(ids)) {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(error) => error.0,
    }
}

fn write_token(dir: &Path, mode: u32, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pod-token");
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn token_result(path: PathBuf) -> Result<Option<PodIdentitySettings>, ConfigError> {
    let flags = Layer {
        eks_pod_identity: Some(true),
        eks_pod_identity_token_file: Some(path),
        ..Layer::default()
    };
    resolve_pod_identity(&Layer::default(), &flags, &Opener::OwnRights)
}

#[test]
fn the_pod_identity_endpoint_and_its_token_file_come_together() {
    let without_token = Layer {
        eks_pod_identity: Some(true),
        ..Layer::default()
    };
    let error = resolve_pod_identity(&Layer::default(), &without_token, &Opener::OwnRights)
        .expect_err("an endpoint without its token");
    assert!(
        error
            .0
            .starts_with("--eks-pod-identity needs --eks-pod-identity-token-file FILE"),
        "{}",
        error.0
    );
    let dir = TempDir::new();
    let file = Layer {
        eks_pod_identity_token_file: Some(write_token(dir.path(), 0o600, "a-token-of-20-chars")),
        ..Layer::default()
    };
    let error = resolve_pod_identity(&file, &Layer::default(), &Opener::OwnRights)
        .expect_err("a token without its endpoint");
    assert!(
        error.0.starts_with(
            "config: eks_pod_identity_token_file is read only with config: eks_pod_identity"
        ),
        "{}",
        error.0
    );
}

#[test]
fn ecs_ids_parse_in_order_and_the_flags_replace_the_file() {
    let file = Layer {
        ecs_credentials: vec!["old=arn:aws:iam::123456789012:role/old".into()],
        ..Layer::default()
    };
    let from_file = resolve_ecs(&file, &Layer::default()).expect("valid");
    assert_eq!(from_file.credentials[0].id, "old");
    let flags = flags_with(&[
        "app=arn:aws:iam::123456789012:role/app",
        "worker.2=arn:aws:iam::210987654321:role/path/worker",
    ]);
    let settings = resolve_ecs(&file, &flags).expect("valid");
    let ids: Vec<&str> = settings.credentials.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["app", "worker.2"]);
    assert_eq!(settings.credentials[1].role.name, "worker");
    assert_eq!(
        resolve_ecs(&Layer::default(), &Layer::default()).expect("none"),
        EcsSettings::default()
    );
}

#[test]
fn bad_ecs_ids_are_refused_naming_the_flag() {
    let duplicate = ecs_error(&[
        "app=arn:aws:iam::123456789012:role/a",
        "app=arn:aws:iam::123456789012:role/b",
    ]);
    assert!(duplicate.starts_with("--ecs-credentials "), "{duplicate}");
    assert!(duplicate.contains("given twice"), "{duplicate}");
    let reserved = ecs_error(&["imds-tun=arn:aws:iam::123456789012:role/a"]);
    assert!(reserved.contains("instance's role"), "{reserved}");
    assert!(ecs_error(&["app"]).contains("expected ID=ROLE_ARN"));
    assert!(ecs_error(&["a/b=arn:aws:iam::123456789012:role/a"]).contains("letters, digits"));
    assert!(ecs_error(&["app=arn:aws:s3:::bucket"]).contains("role ARN"));
    let many: Vec<String> = (0..=MAX_ECS_IDS)
        .map(|n| format!("id{n}=arn:aws:iam::123456789012:role/r"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(ecs_error(&many).contains("more than the limit"));
}

#[test]
fn the_pod_identity_token_file_is_read_as_a_secret() {
    let dir = TempDir::new();
    let token = "eyJhbGciOiJSUzI1NiJ9.pod-identity-token";
    let settings = token_result(write_token(dir.path(), 0o600, token))
        .expect("valid")
        .expect("an endpoint");
    assert!(settings.token.matches(token.as_bytes()));
    assert_eq!(
        resolve_pod_identity(&Layer::default(), &Layer::default(), &Opener::OwnRights)
            .expect("none"),
        None,
        "no file, no endpoint"
    );
}

#[test]
fn a_pod_identity_token_file_others_may_read_or_with_a_newline_is_refused_unshown() {
    let dir = TempDir::new();
    let secret = "supersecretvalue-0123456789";
    let open = token_result(write_token(dir.path(), 0o644, secret)).expect_err("o+r");
    assert!(
        open.0.starts_with("--eks-pod-identity-token-file "),
        "{}",
        open.0
    );
    assert!(open.0.contains("chmod 600"), "{}", open.0);
    let newline = token_result(write_token(dir.path(), 0o600, &format!("{secret}\n")))
        .expect_err("a trailing newline");
    assert!(newline.0.contains("printf %s"), "{}", newline.0);
    let short = token_result(write_token(dir.path(), 0o600, "short")).expect_err("short");
    assert!(short.0.contains("shorter than"), "{}", short.0);
    for error in [open, newline, short] {
        assert!(!error.0.contains(secret), "{}", error.0);
    }
}
