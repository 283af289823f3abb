//! The instance identity document (`dynamic/instance-identity/document`).
//!
//! Built from the same [`Instance`] as the meta-data tree, so the document and the
//! leaves cannot disagree (AEMM's defaults do: ami-id vs imageId, local-ipv4 vs privateIp).
//! The bytes are made once; signatures are computed over exactly these bytes.

use serde_json::Value;
use time::OffsetDateTime;

use super::Instance;
use super::responses::{iso8601_utc_seconds, pretty_json};

/// The document's schema version, unchanged on EC2 since 2017.
pub const DOCUMENT_VERSION: &str = "2017-09-30";

/// The document in EC2's field order and layout. `pending_time` is when the "instance" started.
pub fn document(instance: &Instance, pending_time: OffsetDateTime) -> String {
    pretty_json(&[
        ("accountId", instance.account_id.as_str().into()),
        ("architecture", instance.architecture.as_str().into()),
        (
            "availabilityZone",
            instance.availability_zone.as_str().into(),
        ),
        ("billingProducts", Value::Null),
        ("devpayProductCodes", Value::Null),
        ("marketplaceProductCodes", Value::Null),
        ("imageId", instance.ami_id.as_str().into()),
        ("instanceId", instance.instance_id.as_str().into()),
        ("instanceType", instance.instance_type.as_str().into()),
        ("kernelId", Value::Null),
        ("pendingTime", iso8601_utc_seconds(pending_time).into()),
        ("privateIp", instance.local_ipv4.to_string().into()),
        ("ramdiskId", Value::Null),
        ("region", instance.region.as_str().into()),
        ("version", DOCUMENT_VERSION.into()),
    ])
}
