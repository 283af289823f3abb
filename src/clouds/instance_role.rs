//! The instance's role as the container endpoints (ECS, EKS Pod Identity) serve it: the default
//! role's source and ARN, and the `--caller-role` rules EC2 has too.
//!
//! The rules are the same [`CallerRoles`] EC2 holds (one `Arc`), so a caller gets the same role,
//! and the same cached keys, whichever endpoint it asks: a role is assumed once. What this does
//! not do: write the answer (each endpoint has its own body), or decide who the caller is
//! (`http` asks `attribution` when the service says its answer depends on the caller).

use std::sync::Arc;
use std::time::Duration;

use crate::attribution::CallerIdentity;
use crate::credentials::CredentialSource;
use crate::credentials::naming::RoleArn;
use crate::credentials::roles::CallerRoles;

/// How long a first ask waits for a role's first credentials, as EC2 waits.
pub const FIRST_CREDENTIALS_WAIT: Duration = Duration::from_secs(5);

/// The role a request is served: where its keys come from, and its names.
pub struct ServedRole {
    /// The role's credentials, from memory.
    pub source: Arc<dyn CredentialSource>,
    /// The role's ARN (`RoleArn` of an ECS answer).
    pub arn: String,
    /// The role's name, for the audit line.
    pub name: String,
    /// The account the role belongs to (`AccountId` of a Pod Identity answer).
    pub account_id: String,
}

impl std::fmt::Debug for ServedRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedRole")
            .field("arn", &self.arn)
            .finish_non_exhaustive()
    }
}

/// The instance's role and the per-caller rules.
#[derive(Clone)]
pub struct InstanceRole {
    source: Arc<dyn CredentialSource>,
    arn: String,
    name: String,
    account_id: String,
    caller_roles: Option<Arc<CallerRoles>>,
}

impl std::fmt::Debug for InstanceRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceRole")
            .field("arn", &self.arn)
            .field("caller_roles", &self.caller_roles.is_some())
            .finish_non_exhaustive()
    }
}

impl InstanceRole {
    /// The role `source` serves: `role_arn` (`--role-arn`) when given, else the instance
    /// profile's role `role_name` in `account_id` of `region`'s partition.
    pub fn new(
        source: Arc<dyn CredentialSource>,
        role_arn: Option<&RoleArn>,
        role_name: &str,
        account_id: &str,
        region: &str,
    ) -> InstanceRole {
        let (arn, account_id) = match role_arn {
            Some(role) => (role.arn.clone(), role.account_id.clone()),
            None => {
                let (partition, _) = crate::clouds::ec2::partition(region);
                (
                    format!("arn:{partition}:iam::{account_id}:role/{role_name}"),
                    account_id.to_owned(),
                )
            }
        };
        InstanceRole {
            source,
            arn,
            name: role_name.to_owned(),
            account_id,
            caller_roles: None,
        }
    }

    /// The `--caller-role` rules, shared with EC2.
    pub fn with_caller_roles(mut self, roles: Arc<CallerRoles>) -> InstanceRole {
        self.caller_roles = Some(roles);
        self
    }

    /// Whether some callers get another role: then the answer depends on the caller.
    pub fn has_caller_roles(&self) -> bool {
        self.caller_roles.is_some()
    }

    /// The instance's own role, whoever asks.
    pub fn default_role(&self) -> ServedRole {
        ServedRole {
            source: self.source.clone(),
            arn: self.arn.clone(),
            name: self.name.clone(),
            account_id: self.account_id.clone(),
        }
    }

    /// The role `caller` is served: the first `--caller-role` rule matching it (started now if
    /// this is its first caller, waiting up to [`FIRST_CREDENTIALS_WAIT`] for its first keys),
    /// else the instance's. `Err` names the rule that could apply but cannot be told (the
    /// caller gets nothing; the log says why). A caller not identified (a server without
    /// attribution) gets the instance's role, as on EC2.
    pub async fn for_caller(&self, caller: Option<&CallerIdentity>) -> Result<ServedRole, String> {
        let Some((roles, caller)) = self.caller_roles.as_ref().zip(caller) else {
            return Ok(self.default_role());
        };
        match roles.for_caller(caller) {
            Ok(None) => Ok(self.default_role()),
            Ok(Some(role)) => {
                let source = roles.source(role);
                if !source.wait_first(FIRST_CREDENTIALS_WAIT).await {
                    crate::warn_limited!(role = %role.role.arn, "no credentials yet for this caller role");
                }
                Ok(ServedRole {
                    source,
                    arn: role.role.arn.clone(),
                    name: role.role.name.clone(),
                    account_id: role.role.account_id.clone(),
                })
            }
            Err(undecided) => Err(undecided.to_string()),
        }
    }
}
