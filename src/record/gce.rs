//! Recording GCE: one `GET /computeMetadata/v1/?recursive=true&alt=json` with
//! `Metadata-Flavor: Google`, kept as [`GceDocument`] when it has GCE's `instance` and
//! `project` objects.
//!
//! GCE's recursive document does not hold the service accounts' access or identity tokens
//! (they are endpoints of their own, which `record` never asks); keys that would hold one are
//! dropped all the same ([`drop_token_keys`]), whatever a service puts in the document.

use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde_json::Value;

use super::{Outcome, Recorder};
use crate::snapshot::{BOUNDS, GceDocument};

/// The path and query of GCE's whole document.
pub const DOCUMENT_PATH: &str = "/computeMetadata/v1/?recursive=true&alt=json";

/// Object keys never kept in a GCE or Azure document, compared without case: where tokens of
/// any kind would be.
const TOKEN_KEYS: &[&str] = &[
    "token",
    "access_token",
    "accesstoken",
    "id_token",
    "idtoken",
    "identity",
    "refresh_token",
];

/// Removes, at every depth of `value`, the object keys named like tokens (`token`, `access_token`,
/// `id_token`, `identity`, `refresh_token`, any case); returns how many.
pub fn drop_token_keys(value: &mut Value) -> usize {
    match value {
        Value::Object(fields) => {
            let before = fields.len();
            fields.retain(|key, _| {
                !TOKEN_KEYS
                    .iter()
                    .any(|token| key.eq_ignore_ascii_case(token))
            });
            let mut dropped = before - fields.len();
            for inner in fields.values_mut() {
                dropped += drop_token_keys(inner);
            }
            dropped
        }
        Value::Array(items) => items.iter_mut().map(drop_token_keys).sum(),
        _ => 0,
    }
}

/// Fetches `path_and_query` with `header` and reads the answer as one JSON object within the
/// bounds, token keys dropped; what both GCE and Azure do.
pub(crate) async fn document(
    recorder: &mut Recorder,
    path_and_query: &str,
    header: (HeaderName, HeaderValue),
) -> Outcome<Value> {
    let answer = match recorder
        .client()
        .fetch(Method::GET, path_and_query, &[header], BOUNDS.leaf_bytes)
        .await
    {
        Ok(answer) if answer.status == StatusCode::OK => answer,
        Ok(answer) => {
            return Outcome::Absent(format!("GET {path_and_query} answered {}", answer.status));
        }
        Err(error) => return Outcome::Failed(error),
    };
    let mut document: Value = match serde_json::from_slice(&answer.body) {
        Ok(document @ Value::Object(_)) => document,
        _ => return Outcome::Absent(format!("GET {path_and_query} is not a JSON object")),
    };
    drop_token_keys(&mut document);
    // Serialising a Value cannot fail; its length is what the snapshot's bounds count.
    let len = serde_json::to_vec(&document).map_or(0, |bytes| bytes.len());
    if !recorder.count_bytes(len, path_and_query) {
        return Outcome::Absent(format!(
            "GET {path_and_query}: beyond the snapshot's bounds"
        ));
    }
    Outcome::Recorded(document)
}

/// Records GCE's document at the recorder's service.
pub(crate) async fn record(recorder: &mut Recorder) -> Outcome<GceDocument> {
    let header = (
        HeaderName::from_static("metadata-flavor"),
        HeaderValue::from_static("Google"),
    );
    match document(recorder, DOCUMENT_PATH, header).await {
        Outcome::Recorded(document) => {
            if ["instance", "project"]
                .iter()
                .all(|part| document.get(part).is_some_and(Value::is_object))
            {
                Outcome::Recorded(GceDocument { document })
            } else {
                Outcome::Absent(format!(
                    "GET {DOCUMENT_PATH} has no \"instance\" and \"project\" objects"
                ))
            }
        }
        Outcome::Absent(why) => Outcome::Absent(why),
        Outcome::Failed(error) => Outcome::Failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_keys_are_dropped_at_every_depth() {
        let mut document = json!({
            "instance": {
                "serviceAccounts": {
                    "default": {"email": "a@b", "token": {"access_token": "ya29"}, "Identity": "jwt"}
                },
                "attributes": {"k": "v", "list": [{"id_token": "x", "keep": 1}]}
            },
            "project": {"projectId": "p"}
        });
        assert_eq!(drop_token_keys(&mut document), 3);
        assert_eq!(
            document,
            json!({
                "instance": {
                    "serviceAccounts": {"default": {"email": "a@b"}},
                    "attributes": {"k": "v", "list": [{"keep": 1}]}
                },
                "project": {"projectId": "p"}
            })
        );
    }
}
