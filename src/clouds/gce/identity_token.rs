//! Fake GCE identity tokens: JWTs signed RS256 with a key committed to this repository.
//!
//! **Not Google-signed; the private key is public by design** (`assets/gce/identity-key.pem`,
//! docs/identity-signing.md). A token that verifies against it proves nothing about who made it.
//! It exists so that code which verifies ID tokens can run against imds-tun: the verifier is
//! pointed at imds-tun's certificates instead of Google's, served in Google's two formats at
//! [`CERTS_PATH`] (key id → PEM certificate, as `oauth2/v1/certs`) and [`JWKS_PATH`] (a JWK set,
//! as `oauth2/v3/certs`). Those paths need no `Metadata-Flavor` header, like Google's own.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::instance::GceInstance;

/// The private key, PKCS#8 PEM. Public on purpose: see the module documentation.
const KEY_PEM: &str = include_str!("../../../assets/gce/identity-key.pem");
/// Its self-signed certificate, as verifiers are given it.
const CERT_PEM: &str = include_str!("../../../assets/gce/identity-cert.pem");

/// Key id → PEM certificate, the format of Google's `oauth2/v1/certs`.
pub const CERTS_PATH: &str = "/imds-tun/gce/certs";
/// A JWK set, the format of Google's `oauth2/v3/certs`.
pub const JWKS_PATH: &str = "/imds-tun/gce/jwks";

/// The issuer Google's identity tokens carry.
pub const ISSUER: &str = "https://accounts.google.com";

/// How long an identity token is valid, as Google's are.
pub const LIFETIME_SECONDS: i64 = 3600;

/// Signs identity tokens and publishes the certificate to verify them.
pub struct IdentitySigner {
    key: SigningKey<Sha256>,
    key_id: String,
    jwks: Value,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The committed key does not load: a broken checkout, reported once at start-up.
#[derive(Debug, thiserror::Error)]
#[error("assets/gce/identity-key.pem does not parse as a PKCS#8 RSA key: {0}")]
pub struct KeyError(String);

impl IdentitySigner {
    /// The signer of the committed key (`assets/gce/identity-key.pem`), its key id derived
    /// from the certificate.
    pub fn load() -> Result<IdentitySigner, KeyError> {
        let private =
            RsaPrivateKey::from_pkcs8_pem(KEY_PEM).map_err(|error| KeyError(error.to_string()))?;
        // Google's key ids are 40 hex digits; ours are derived from the certificate, so a new
        // key gets a new id.
        let key_id: String = Sha256::digest(CERT_PEM.as_bytes())[..20]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let public = private.to_public_key();
        let jwks = json!({
            "keys": [{
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": key_id,
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }]
        });
        Ok(IdentitySigner {
            key: SigningKey::new(private),
            key_id,
            jwks,
        })
    }

    /// `{kid: certificate PEM}`.
    pub fn certs(&self) -> Value {
        json!({ self.key_id.clone(): CERT_PEM })
    }

    /// The public key as a JWK set (`{"keys": [...]}`), served at `/imds-tun/gce/jwks` as
    /// Google's `oauth2/v3/certs`.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// An identity token for `audience`, issued at `now` (Unix seconds). `full` adds the
    /// `google.compute_engine` claim that `format=full` asks for.
    pub fn token(
        &self,
        instance: &GceInstance,
        audience: &str,
        full: bool,
        now: i64,
        created: i64,
    ) -> String {
        let subject = service_account_id(instance);
        let mut claims = json!({
            "aud": audience,
            "azp": subject,
            "email": instance.service_account_email,
            "email_verified": true,
            "exp": now + LIFETIME_SECONDS,
            "iat": now,
            "iss": ISSUER,
            "sub": subject,
        });
        if full {
            claims["google"] = json!({
                "compute_engine": {
                    "instance_creation_timestamp": created,
                    "instance_id": instance.instance_id.to_string(),
                    "instance_name": instance.instance_name,
                    "project_id": instance.project_id,
                    "project_number": instance.numeric_project_id,
                    "zone": instance.zone,
                }
            });
        }
        let header = json!({ "alg": "RS256", "kid": self.key_id, "typ": "JWT" });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes()).to_vec();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// The service account's numeric unique id (21 digits), derived from the project number.
pub fn service_account_id(instance: &GceInstance) -> String {
    format!("1{:020}", instance.numeric_project_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier as _;

    #[test]
    fn tokens_verify_against_the_published_key_and_carry_the_claims() {
        let signer = IdentitySigner::load().expect("committed key loads");
        let instance = GceInstance::example();
        let token = signer.token(
            &instance,
            "https://example.com",
            true,
            1_700_000_000,
            1_699_000_000,
        );
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64"))
                .expect("json");
        assert_eq!(claims["aud"], "https://example.com");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["exp"], 1_700_003_600);
        assert_eq!(claims["email"], instance.service_account_email.as_str());
        assert_eq!(
            claims["google"]["compute_engine"]["project_id"],
            "imds-tun-example"
        );

        let jwk = &signer.jwks()["keys"][0];
        let n = rsa::BigUint::from_bytes_be(
            &URL_SAFE_NO_PAD
                .decode(jwk["n"].as_str().unwrap_or(""))
                .expect("n"),
        );
        let e = rsa::BigUint::from_bytes_be(
            &URL_SAFE_NO_PAD
                .decode(jwk["e"].as_str().unwrap_or(""))
                .expect("e"),
        );
        let public = rsa::RsaPublicKey::new(n, e).expect("public key");
        let signature =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).expect("sig").as_slice())
                .expect("signature");
        VerifyingKey::<Sha256>::new(public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the token verifies with the JWKS key");
        assert!(signer.certs()[jwk["kid"].as_str().unwrap_or("")].is_string());
    }
}
