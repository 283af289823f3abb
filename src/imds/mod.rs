//! TEMPORARY STUB on main: the real module comes from the imds branch.

pub mod signature;

use crate::config::Settings;
use crate::credentials::CredentialSource;
use std::sync::Arc;

pub struct Imds;

impl Imds {
    pub fn new(_settings: &Settings, _credentials: Arc<dyn CredentialSource>) -> Imds {
        Imds
    }
    pub fn respond(&self, _request: &http::request::Parts) -> http::Response<bytes::Bytes> {
        http::Response::new(bytes::Bytes::from_static(b"stub"))
    }
}
