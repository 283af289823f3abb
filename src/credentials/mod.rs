//! TEMPORARY STUB on main: the real module comes from the imds branch.
pub trait CredentialSource: Send + Sync + 'static {}
pub mod fake {
    pub struct FakeCredentials;
    impl FakeCredentials {
        pub fn new() -> Self {
            FakeCredentials
        }
    }
    impl super::CredentialSource for FakeCredentials {}
}
