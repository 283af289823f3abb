//! Recording Azure: one `GET /metadata/instance?api-version=V` with `Metadata: true`, kept as
//! [`AzureDocument`] when it has Azure's `compute` object.
//!
//! `V` is [`API_VERSION`], the newest version imds-tun itself serves (a real VM knows it too),
//! so the document has every field imds-tun can replay. The managed-identity endpoint
//! (`/metadata/identity/…`) is never asked; token-named keys are dropped from the document all
//! the same (see [`super::gce::drop_token_keys`]).

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{Outcome, Recorder};
use crate::snapshot::AzureDocument;

/// The `api-version` recorded with: the newest of [`crate::clouds::azure::API_VERSIONS`].
pub const API_VERSION: &str = match crate::clouds::azure::API_VERSIONS.last() {
    Some(version) => version,
    None => "2021-02-01",
};

/// Records Azure's instance document at the recorder's service.
pub(crate) async fn record(recorder: &mut Recorder) -> Outcome<AzureDocument> {
    let path = format!("/metadata/instance?api-version={API_VERSION}");
    let header = (
        HeaderName::from_static("metadata"),
        HeaderValue::from_static("true"),
    );
    match super::gce::document(recorder, &path, header).await {
        Outcome::Recorded(instance) => {
            if instance.get("compute").is_some_and(Value::is_object) {
                Outcome::Recorded(AzureDocument {
                    api_version: API_VERSION.to_owned(),
                    instance,
                })
            } else {
                Outcome::Absent(format!("GET {path} has no \"compute\" object"))
            }
        }
        Outcome::Absent(why) => Outcome::Absent(why),
        Outcome::Failed(error) => Outcome::Failed(error),
    }
}
