//! A role per caller (`--caller-role SELECTOR=ROLE_ARN`): which callers get which role, and the
//! role's credentials, started the first time one of its callers asks.
//!
//! The first rule whose selector matches the caller wins; a caller no rule matches gets the
//! instance's default role. Each role has its own source (its own cache and single refresher,
//! the same machinery as the default role's), created on first use: a role nobody asks for is
//! never assumed. How a role's source is made is decided at start-up by
//! [`super::setup::select`] (AssumeRole with the source credentials, or fake credentials with
//! `--mock-credentials`), and handed here as a [`RoleStarter`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::CredentialSource;
use super::naming::RoleArn;
use crate::attribution::{CallerIdentity, Cgroup, Origin};
use crate::cidr::IpNet;

/// Which callers a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Local processes of this user (`uid:N`, or `user:NAME` resolved at start-up).
    Uid(u32),
    /// Callers from this address block (`cidr:ADDR/LEN`) that come from another network
    /// namespace or host; a local process is never matched by its address, whichever of this
    /// host's addresses it binds.
    Cidr(IpNet),
    /// Callers whose cgroup path starts with this (`cgroup:PREFIX`): a local process's own,
    /// a forwarded caller's container's.
    Cgroup(String),
}

/// Whether a rule is for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// It is.
    Yes,
    /// It is not.
    No,
    /// It could be, but what it needs to know could not be found out: why.
    Undecided(&'static str),
}

impl Selector {
    /// Whether `caller` is one this rule is for, or could be and cannot be told.
    pub fn matches(&self, caller: &CallerIdentity) -> Match {
        let yes = |matched: bool| if matched { Match::Yes } else { Match::No };
        match self {
            Selector::Uid(uid) => match caller.origin {
                Origin::Local => yes(caller.uid == Some(*uid)),
                Origin::Unidentified(why) => Match::Undecided(why),
                Origin::Forwarded | Origin::Translated => Match::No,
            },
            Selector::Cidr(cidr) => match caller.origin {
                Origin::Forwarded => yes(caller
                    .address
                    .is_some_and(|address| crate::cidr::contains(cidr, address))),
                Origin::Local | Origin::Translated | Origin::Unidentified(_) => Match::No,
            },
            Selector::Cgroup(prefix) => match &caller.cgroup {
                Cgroup::Found(cgroup) => yes(cgroup.starts_with(prefix.as_str())),
                Cgroup::Outside => Match::No,
                Cgroup::Undecided(why) => Match::Undecided(why),
                Cgroup::NotAsked => Match::Undecided("its cgroup was not looked up"),
            },
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Uid(uid) => write!(f, "uid:{uid}"),
            Selector::Cidr(cidr) => write!(f, "cidr:{cidr}"),
            Selector::Cgroup(prefix) => write!(f, "cgroup:{prefix}"),
        }
    }
}

/// One `--caller-role` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerRole {
    /// The part before `=`: which callers.
    pub selector: Selector,
    /// The part after it: the role they get instead of the instance's.
    pub role: RoleArn,
}

/// A rule that could apply to a caller but cannot be told: the caller gets no credentials.
#[derive(Debug, Clone, Copy)]
pub struct Undecided<'a> {
    /// The rule.
    pub selector: &'a Selector,
    /// What could not be found out.
    pub why: &'static str,
}

impl std::fmt::Display for Undecided<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--caller-role {} could apply but {}",
            self.selector, self.why
        )
    }
}

/// A started role's credentials, and a way to wait for the first set.
pub trait RoleSource: CredentialSource {
    /// Waits up to `timeout` for the first set; whether one is held.
    fn wait_first(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// Makes a role's source; called once per role, inside the runtime.
pub type RoleStarter = Arc<dyn Fn(&RoleArn) -> Arc<dyn RoleSource> + Send + Sync>;

/// A role, started when first asked for.
pub struct LazyRole {
    /// The role assumed on first use.
    pub role: RoleArn,
    started: OnceLock<Arc<dyn RoleSource>>,
}

impl LazyRole {
    /// `role`, not started: nothing is assumed until [`LazyRole::source_with`] is first called.
    pub fn new(role: RoleArn) -> LazyRole {
        LazyRole {
            role,
            started: OnceLock::new(),
        }
    }

    /// The role's source, started with `starter` now if this is the first ask.
    pub fn source_with(&self, starter: &RoleStarter) -> Arc<dyn RoleSource> {
        self.started
            .get_or_init(|| {
                tracing::info!(role = %self.role.arn, "credentials: first caller for this role; starting its source");
                starter(&self.role)
            })
            .clone()
    }
}

impl std::fmt::Debug for LazyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRole")
            .field("role", &self.role.arn)
            .field("started", &self.started.get().is_some())
            .finish()
    }
}

/// The rules and their roles.
pub struct CallerRoles {
    rules: Vec<(Selector, Arc<LazyRole>)>,
    starter: RoleStarter,
}

impl std::fmt::Debug for CallerRoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerRoles")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl CallerRoles {
    /// Rules naming the same role share one source.
    pub fn new(rules: &[CallerRole], starter: RoleStarter) -> CallerRoles {
        let mut roles: Vec<Arc<LazyRole>> = Vec::new();
        let rules = rules
            .iter()
            .map(|rule| {
                let role = match roles.iter().find(|role| role.role.arn == rule.role.arn) {
                    Some(role) => role.clone(),
                    None => {
                        let role = Arc::new(LazyRole::new(rule.role.clone()));
                        roles.push(role.clone());
                        role
                    }
                };
                (rule.selector.clone(), role)
            })
            .collect();
        CallerRoles { rules, starter }
    }

    /// The role of the first rule matching `caller`; `Ok(None)`: the default role. A rule
    /// before the first match (or before the end) that could have matched but cannot be told
    /// decides nothing: the caller gets no role at all, `Err` says which rule and why.
    pub fn for_caller(
        &self,
        caller: &CallerIdentity,
    ) -> Result<Option<&Arc<LazyRole>>, Undecided<'_>> {
        for (selector, role) in &self.rules {
            match selector.matches(caller) {
                Match::Yes => return Ok(Some(role)),
                Match::No => {}
                Match::Undecided(why) => return Err(Undecided { selector, why }),
            }
        }
        Ok(None)
    }

    /// The `cgroup:` rules' prefixes: where a caller's cgroup needs looking for.
    pub fn cgroup_prefixes(rules: &[CallerRole]) -> Vec<String> {
        rules
            .iter()
            .filter_map(|rule| match &rule.selector {
                Selector::Cgroup(prefix) => Some(prefix.clone()),
                _ => None,
            })
            .collect()
    }

    /// The role's source, started now if this is the first ask.
    pub fn source(&self, role: &LazyRole) -> Arc<dyn RoleSource> {
        role.source_with(&self.starter)
    }
}

impl RoleSource for super::cache::RefreshingCredentials {
    fn wait_first(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(super::cache::RefreshingCredentials::wait_first(
            self, timeout,
        ))
    }
}

impl RoleSource for super::fake::FakeCredentials {
    fn wait_first(&self, _timeout: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(std::future::ready(true))
    }
}

/// `uid:N`, `cidr:ADDR/LEN`, `cgroup:PREFIX`; `user:NAME` is resolved by the caller (config),
/// which knows the password database.
pub fn parse_selector(
    text: &str,
    uid_of: impl Fn(&str) -> Option<u32>,
) -> Result<Selector, String> {
    let (kind, value) = text
        .split_once(':')
        .ok_or_else(|| "expected uid:N, user:NAME, cidr:ADDR/LEN or cgroup:PREFIX".to_owned())?;
    match kind {
        "uid" => value
            .parse()
            .map(Selector::Uid)
            .map_err(|_| format!("uid:{value}: expected a number")),
        "user" => uid_of(value)
            .map(Selector::Uid)
            .ok_or_else(|| format!("user:{value}: no such user")),
        "cidr" => crate::cidr::parse(value).map(Selector::Cidr),
        "cgroup" if value.starts_with('/') => Ok(Selector::Cgroup(value.to_owned())),
        "cgroup" => Err(format!(
            "cgroup:{value}: expected a cgroup path prefix starting with /"
        )),
        other => Err(format!(
            "unknown selector {other:?}: use uid:N, user:NAME, cidr:ADDR/LEN or cgroup:PREFIX"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local caller when `uid` is given, else a forwarded one; no cgroup is `Outside`.
    fn caller(uid: Option<u32>, address: &str, cgroup: Option<&str>) -> CallerIdentity {
        CallerIdentity {
            address: Some(address.parse().expect("ip")),
            origin: if uid.is_some() {
                Origin::Local
            } else {
                Origin::Forwarded
            },
            uid,
            cgroup: cgroup.map_or(Cgroup::Outside, |path| Cgroup::Found(path.to_owned())),
            ..CallerIdentity::default()
        }
    }

    fn arn(name: &str) -> RoleArn {
        RoleArn::parse(&format!("arn:aws:iam::123456789012:role/{name}")).expect("arn")
    }

    #[test]
    fn selectors_parse_and_match_as_written() {
        let uid_of = |name: &str| (name == "alice").then_some(1000);
        assert_eq!(parse_selector("uid:1001", uid_of), Ok(Selector::Uid(1001)));
        assert_eq!(
            parse_selector("user:alice", uid_of),
            Ok(Selector::Uid(1000))
        );
        assert!(parse_selector("user:mallory", uid_of).is_err());
        assert!(parse_selector("cgroup:docker", uid_of).is_err());
        assert!(parse_selector("pid:1", uid_of).is_err());
        let block = parse_selector("cidr:172.17.0.0/16", uid_of).expect("cidr");
        assert_eq!(block.matches(&caller(None, "172.17.0.5", None)), Match::Yes);
        assert_eq!(block.matches(&caller(None, "10.0.0.5", None)), Match::No);
        let cgroup = parse_selector("cgroup:/system.slice/docker-", uid_of).expect("cgroup");
        assert_eq!(
            cgroup.matches(&caller(
                Some(0),
                "169.254.169.253",
                Some("/system.slice/docker-ab.scope")
            )),
            Match::Yes
        );
        assert_eq!(
            cgroup.matches(&caller(Some(0), "169.254.169.253", None)),
            Match::No
        );
    }

    /// Issue 23, items 13, 15 and 20: a local process is never matched by its address, and a
    /// rule that could match a caller who cannot be told refuses instead of falling through.
    #[test]
    fn a_local_address_never_matches_cidr_and_an_undecidable_rule_refuses() {
        let uid_of = |_: &str| None;
        let block = parse_selector("cidr:172.17.0.0/16", uid_of).expect("cidr");
        // uid 1000 bound the host's own docker0 address: still uid 1000, not the block.
        let host_side = caller(Some(1000), "172.17.0.1", None);
        assert_eq!(block.matches(&host_side), Match::No);
        let translated = CallerIdentity {
            origin: Origin::Translated,
            cgroup: Cgroup::Undecided("its address was translated"),
            ..caller(None, "172.17.0.1", None)
        };
        assert_eq!(block.matches(&translated), Match::No);
        let closing = CallerIdentity {
            origin: Origin::Unidentified("TIME-WAIT"),
            ..caller(None, "169.254.169.253", None)
        };
        let rules = |selector: Selector| {
            CallerRoles::new(
                &[CallerRole {
                    selector,
                    role: arn("narrow"),
                }],
                Arc::new(|_: &RoleArn| {
                    Arc::new(super::super::fake::FakeCredentials::new(
                        Duration::from_secs(3600),
                    )) as Arc<dyn RoleSource>
                }),
            )
        };
        let by_uid = rules(Selector::Uid(1000));
        let refused = by_uid.for_caller(&closing).expect_err("could be uid 1000");
        assert_eq!(
            refused.to_string(),
            "--caller-role uid:1000 could apply but TIME-WAIT"
        );
        assert!(
            matches!(by_uid.for_caller(&translated), Ok(None)),
            "no local socket: no uid rule can apply"
        );
        let by_cgroup = rules(Selector::Cgroup("/docker/".into()));
        let unscanned = CallerIdentity {
            cgroup: Cgroup::Undecided("the process scan ran out of time"),
            ..caller(None, "172.17.0.2", None)
        };
        assert!(by_cgroup.for_caller(&unscanned).is_err());
        assert!(by_cgroup.for_caller(&translated).is_err());
        assert!(matches!(
            by_cgroup.for_caller(&caller(None, "10.0.0.5", None)),
            Ok(None)
        ));
    }

    #[test]
    fn the_first_matching_rule_wins_and_a_role_starts_once_when_first_asked() {
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = started.clone();
        let starter: RoleStarter = Arc::new(move |role: &RoleArn| {
            log.lock().expect("lock").push(role.name.clone());
            Arc::new(super::super::fake::FakeCredentials::new(
                Duration::from_secs(3600),
            )) as Arc<dyn RoleSource>
        });
        let roles = CallerRoles::new(
            &[
                CallerRole {
                    selector: Selector::Uid(1000),
                    role: arn("app"),
                },
                CallerRole {
                    selector: Selector::Cgroup("/".into()),
                    role: arn("wide"),
                },
                CallerRole {
                    selector: Selector::Uid(1001),
                    role: arn("app"),
                },
            ],
            starter,
        );
        let alice = caller(Some(1000), "169.254.169.253", None);
        let role = roles
            .for_caller(&alice)
            .expect("decided")
            .expect("a rule matches");
        assert_eq!(role.role.name, "app");
        assert!(
            started.lock().expect("lock").is_empty(),
            "nothing assumed before an ask"
        );
        roles.source(role);
        roles.source(role);
        let bob = caller(Some(1001), "169.254.169.253", Some("/user.slice"));
        assert_eq!(
            roles
                .for_caller(&bob)
                .expect("decided")
                .expect("wide")
                .role
                .name,
            "wide",
            "first match wins"
        );
        assert_eq!(*started.lock().expect("lock"), vec!["app".to_owned()]);
        let v6 = caller(None, "fd00::1", None);
        assert!(
            matches!(roles.for_caller(&v6), Ok(None)),
            "no rule matches: the default role"
        );
    }
}
