//! The EC2 instance metadata protocol as plain functions of a request.
//!
//! CONTRACT (owned by the config/imds helper):
//! `Imds::new(&Settings, Arc<dyn CredentialSource>) -> Imds` and
//! `Imds::respond(&self, &http::request::Parts) -> http::Response<bytes::Bytes>` (HEAD included).

pub mod signature;
