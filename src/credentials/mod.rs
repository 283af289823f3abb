//! Where role credentials come from: one small trait, one implementation per source.
//!
//! CONTRACT (owned by the config/imds helper): `CredentialSource`, `RoleCredentials`,
//! `CredentialError`; `fake::FakeCredentials`.
