//! The documentation against the code, no root needed: the flag and key tables
//! (`docs_settings`) and the metrics table (`docs_metrics`), the messages the guides quote and the output they show (`docs_messages`),
//! what their sentences claim about answers, limits and abilities (`docs_claims`) and the
//! names module docs use (`docs_prose`). One test crate: `cargo test --test docs`.

mod docs_claims;
mod docs_messages;
mod docs_metrics;
mod docs_prose;
mod docs_settings;
