//! The platform on operating systems other than Linux and macOS: every call says it is not
//! supported, so the crate still builds there.

use super::{PlatformError, TunRequest};
use std::io;

/// Never constructed on this OS.
#[derive(Debug)]
pub struct AsyncTun(());

impl AsyncTun {
    pub fn name(&self) -> &str {
        ""
    }
    pub async fn readable(&self) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    pub fn try_recv(&self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    pub async fn send(&self, _packet: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    pub fn watch(&self) -> super::ClaimWatch {
        super::ClaimWatch::default()
    }
}

pub(crate) fn claim_metadata_address(_request: &TunRequest) -> Result<AsyncTun, PlatformError> {
    Err(PlatformError::Unsupported)
}

pub(crate) fn check_claim(_request: &TunRequest) -> Result<(), PlatformError> {
    Err(PlatformError::Unsupported)
}

pub(crate) fn check_extra_claim(
    _request: &TunRequest,
    _extra: super::ExtraAddress,
) -> Result<(), PlatformError> {
    Err(PlatformError::Unsupported)
}

pub(crate) fn current_claim() -> Result<Option<super::Claim>, PlatformError> {
    Err(PlatformError::Unsupported)
}

pub(crate) fn real_metadata_route()
-> Result<super::real_route::RealRoute, super::real_route::NoRealRoute> {
    Err(super::real_route::NoRealRoute(
        "not supported on this system: connections cannot be bound to an interface here".into(),
    ))
}

pub(crate) use super::file_bits::{groups_of, open_as_user};
