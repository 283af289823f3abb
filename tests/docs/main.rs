//! The documentation against the code, no root needed: the flag and key tables
//! (`docs_settings`), the messages the troubleshooting guide quotes (`docs_messages`) and the
//! names module docs use (`docs_prose`). One test crate: `cargo test --test docs`.

mod docs_messages;
mod docs_prose;
mod docs_settings;
