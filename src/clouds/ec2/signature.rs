//! Signatures over the instance identity document, made with imds-tun's own published key.
//!
//! # ⚠ NOT AWS-SIGNED — THE PRIVATE KEY IS PUBLIC BY DESIGN ⚠
//!
//! The key that signs here (`assets/identity/signing-key.pem`) is committed to the repository and
//! compiled into every imds-tun binary. Anyone can produce documents that verify against it. A
//! signature made here proves nothing about where a document came from; its only purpose is that
//! clients which *check* signatures (with a certificate the operator chooses to give them) can be
//! exercised against imds-tun. Never configure a verifier that guards anything real to trust
//! `assets/identity/signing-cert.pem`, and never mistake these signatures for AWS's.
//!
//! # What EC2 serves, and what we serve instead
//!
//! EC2 serves three signed forms beside `dynamic/instance-identity/document`; this module makes all
//! three from one RSA-2048 key (see `docs/identity-signing.md` for verification commands):
//!
//! | endpoint    | EC2                                   | imds-tun                               |
//! |-------------|---------------------------------------|----------------------------------------|
//! | `signature` | base64 RSA PKCS#1 v1.5 / SHA-256      | the same, one line                     |
//! | `pkcs7`     | PKCS#7 SignedData, DSA / SHA-1        | PKCS#7 SignedData, RSA-2048 / SHA-256  |
//! | `rsa2048`   | PKCS#7 SignedData, RSA-2048 / SHA-256 | the same                               |
//!
//! Both SignedData forms are built like EC2's: the document is *encapsulated* (Vault's AWS auth
//! reads it out of `pkcs7`), the signer's certificate is *not* embedded (the verifier supplies it,
//! as with AWS's per-region certificates), the signer is named by issuer and serial number, and the
//! body is base64 wrapped at 64 columns without the `-----BEGIN PKCS7-----` armour. We sign `pkcs7`
//! with SHA-256 rather than SHA-1: we have no DSA key to imitate anyway, verifiers read the digest
//! algorithm from the structure, and SHA-1 signatures are refused by some system crypto policies.
//! So `pkcs7` and `rsa2048` are byte-identical. The signed attributes are only content-type and
//! message-digest (no signing time), so the output is a pure function of the document.
//!
//! This module does not choose what the document says, nor serve it: [`super`] (EC2) does.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::IssuerAndSerialNumber;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::asn1::{Null, ObjectIdentifier};
use der::{Any, DecodePem as _, Encode as _, Tag};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{Keypair, SignatureEncoding as _, Signer};
use sha2::Sha256;
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier};
use x509_cert::Certificate;

/// The RSA-2048 private key, PKCS#8 PEM. Public on purpose: see the module documentation.
const SIGNING_KEY_PEM: &str = include_str!("../../../assets/identity/signing-key.pem");
/// The self-signed certificate for [`SIGNING_KEY_PEM`] that verifiers are given.
const SIGNING_CERT_PEM: &str = include_str!("../../../assets/identity/signing-cert.pem");

/// `id-data` (RFC 5652 §4): the encapsulated content is plain bytes.
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-sha256` (RFC 5754 §2.2); its parameters are absent.
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `rsaEncryption` (RFC 3370 §3.2), the signature algorithm OpenSSL itself writes in a SignerInfo.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Column at which the SignedData base64 is wrapped, as in PEM bodies and EC2's responses.
const BASE64_LINE: usize = 64;

/// The three signed forms EC2 serves beside the identity document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signatures {
    /// `dynamic/instance-identity/signature`: base64 RSA-SHA256 over the document.
    pub signature: String,
    /// `dynamic/instance-identity/pkcs7`: PKCS#7 SignedData, base64 without PEM armour.
    pub pkcs7: String,
    /// `dynamic/instance-identity/rsa2048`: PKCS#7 SignedData (SHA-256, RSA-2048), base64 without PEM armour.
    pub rsa2048: String,
}

/// Which of the three signed forms a leaf serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedForm {
    /// `signature`.
    Signature,
    /// `pkcs7`.
    Pkcs7,
    /// `rsa2048`.
    Rsa2048,
}

impl Signatures {
    /// The text of one form.
    pub fn form(&self, form: SignedForm) -> &str {
        match form {
            SignedForm::Signature => &self.signature,
            SignedForm::Pkcs7 => &self.pkcs7,
            SignedForm::Rsa2048 => &self.rsa2048,
        }
    }
}

/// How long after start-up [`DeferredSignatures::warm_up`] makes the signatures.
const WARM_UP_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// The signatures of one identity document, made when first asked for instead of at start-up.
///
/// Two RSA-2048 private-key operations (and parsing the key) take about 8 ms of CPU in
/// `num-bigint-dig`, half of what imds-tun spent between exec and its first answer
/// (`perf`, docs/performance.md), for three paths few clients read. [`Self::warm_up`] starts
/// them on tokio's blocking pool as the service starts, so they are normally done before anyone
/// asks; a request that comes first makes them, or waits for them (once, at most those
/// milliseconds).
pub struct DeferredSignatures {
    document: Vec<u8>,
    signatures: std::sync::OnceLock<Signatures>,
}

impl DeferredSignatures {
    /// The signatures of `document` (the exact bytes served), not made yet.
    pub fn new(document: &[u8]) -> std::sync::Arc<DeferredSignatures> {
        std::sync::Arc::new(DeferredSignatures {
            document: document.to_vec(),
            signatures: std::sync::OnceLock::new(),
        })
    }

    /// The signatures, made now if nobody has made them yet (concurrent callers wait for the
    /// one making them).
    pub fn get(&self) -> &Signatures {
        self.signatures
            .get_or_init(|| sign_identity_document(&self.document))
    }

    /// Makes them on tokio's blocking pool `WARM_UP_AFTER` from now, if a runtime is running
    /// (outside one they are made on first use). Not at once: on two cores the signing would
    /// take CPU from the start-up it was moved out of.
    pub fn warm_up(self: &std::sync::Arc<Self>) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let deferred = self.clone();
            runtime.spawn(async move {
                tokio::time::sleep(WARM_UP_AFTER).await;
                let _ = tokio::task::spawn_blocking(move || {
                    deferred.get();
                })
                .await;
            });
        }
    }
}

impl std::fmt::Debug for DeferredSignatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredSignatures")
            .field("document_bytes", &self.document.len())
            .field("made", &self.signatures.get().is_some())
            .finish()
    }
}

/// Two deferred signings are the same leaf when they sign the same bytes (the signature is a
/// pure function of the document).
impl PartialEq for DeferredSignatures {
    fn eq(&self, other: &Self) -> bool {
        self.document == other.document
    }
}

impl Eq for DeferredSignatures {}

/// Signs `document` (the exact bytes served) with the embedded key.
///
/// Deterministic: the same bytes always give the same [`Signatures`]. Never panics; if the embedded
/// key could not be used (the unit tests prove it can), logs one error and returns empty strings.
pub fn sign_identity_document(document: &[u8]) -> Signatures {
    match try_sign(document) {
        Ok(signatures) => signatures,
        Err(error) => {
            tracing::error!(
                "cannot sign the instance identity document; serving empty signatures: {error}"
            );
            Signatures {
                signature: String::new(),
                pkcs7: String::new(),
                rsa2048: String::new(),
            }
        }
    }
}

/// Why a signature could not be made. Each is a build defect, not a runtime condition.
#[derive(Debug, thiserror::Error)]
enum SignError {
    #[error(
        "the embedded signing key or certificate (assets/identity/) is unusable: {0}; \
         regenerate them as docs/identity-signing.md describes"
    )]
    Material(String),
    #[error("RSA signing failed: {0}")]
    Rsa(String),
    #[error("building the PKCS#7 SignedData failed: {0}")]
    Cms(String),
}

/// The parsed key and the signer identifier taken from its certificate.
struct SigningMaterial {
    key: CmsSigner,
    signer_id: IssuerAndSerialNumber,
}

/// Parsed once, on first use; every later signing reuses it.
static MATERIAL: LazyLock<Result<SigningMaterial, String>> = LazyLock::new(load_material);

fn load_material() -> Result<SigningMaterial, String> {
    let private = RsaPrivateKey::from_pkcs8_pem(SIGNING_KEY_PEM)
        .map_err(|e| format!("signing-key.pem does not parse as a PKCS#8 RSA key: {e}"))?;
    let certificate = Certificate::from_pem(SIGNING_CERT_PEM)
        .map_err(|e| format!("signing-cert.pem does not parse as an X.509 certificate: {e}"))?;
    let tbs = certificate.tbs_certificate;
    Ok(SigningMaterial {
        key: CmsSigner(SigningKey::new(private)),
        signer_id: IssuerAndSerialNumber {
            issuer: tbs.issuer,
            serial_number: tbs.serial_number,
        },
    })
}

fn try_sign(document: &[u8]) -> Result<Signatures, SignError> {
    let material = MATERIAL
        .as_ref()
        .map_err(|e| SignError::Material(e.clone()))?;

    let signature = material
        .key
        .0
        .try_sign(document)
        .map_err(|e| SignError::Rsa(e.to_string()))?;
    let signed_data = signed_data_der(material, document).map_err(SignError::Cms)?;
    let signed_data = wrap_base64(&BASE64.encode(signed_data));

    Ok(Signatures {
        signature: BASE64.encode(signature.to_bytes()),
        pkcs7: signed_data.clone(),
        rsa2048: signed_data,
    })
}

/// DER of a ContentInfo holding SignedData: `document` encapsulated as `id-data`, one SHA-256
/// RSA signer named by issuer and serial number, signed attributes content-type and
/// message-digest only, no certificates, no CRLs.
fn signed_data_der(material: &SigningMaterial, document: &[u8]) -> Result<Vec<u8>, String> {
    let content = Any::new(Tag::OctetString, document).map_err(|e| e.to_string())?;
    let encapsulated = EncapsulatedContentInfo {
        econtent_type: ID_DATA,
        econtent: Some(content),
    };
    let sha256 = AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: None,
    };
    let signer_info = SignerInfoBuilder::new(
        &material.key,
        SignerIdentifier::IssuerAndSerialNumber(material.signer_id.clone()),
        sha256.clone(),
        &encapsulated,
        None,
    )
    .map_err(|e| e.to_string())?;
    SignedDataBuilder::new(&encapsulated)
        .add_digest_algorithm(sha256)
        .map_err(|e| e.to_string())?
        .add_signer_info::<CmsSigner, Signature>(signer_info)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?
        .to_der()
        .map_err(|e| e.to_string())
}

/// Breaks base64 into lines of [`BASE64_LINE`] characters joined by `\n`, no trailing newline,
/// so the body can sit between PEM armour lines as EC2's clients put it.
fn wrap_base64(encoded: &str) -> String {
    let mut wrapped = String::with_capacity(encoded.len() + encoded.len() / BASE64_LINE);
    for (index, line) in encoded.as_bytes().chunks(BASE64_LINE).enumerate() {
        if index > 0 {
            wrapped.push('\n');
        }
        // Base64 output is ASCII, so every chunk boundary is a character boundary.
        wrapped.push_str(std::str::from_utf8(line).unwrap_or_default());
    }
    wrapped
}

/// The RSA PKCS#1 v1.5 / SHA-256 key, presented to the CMS builder as `rsaEncryption`.
///
/// `SigningKey<Sha256>` would name itself `sha256WithRSAEncryption`; both are valid (RFC 5754 §3.2),
/// but `rsaEncryption` is what OpenSSL and AWS's own SignedData carry, so older verifiers that
/// only know that one accept ours too.
struct CmsSigner(SigningKey<Sha256>);

impl Keypair for CmsSigner {
    type VerifyingKey = VerifyingKey<Sha256>;

    fn verifying_key(&self) -> Self::VerifyingKey {
        self.0.verifying_key()
    }
}

impl DynSignatureAlgorithmIdentifier for CmsSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(Any::from(Null)),
        })
    }
}

impl Signer<Signature> for CmsSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Signature, rsa::signature::Error> {
        self.0.try_sign(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    use der::Decode as _;
    use rsa::RsaPublicKey;
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::signature::Verifier as _;
    use sha2::Digest as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    #[test]
    fn deferred_signatures_are_made_on_first_use_and_equal_the_eager_ones() {
        let document = br#"{"instanceId" : "i-0123"}"#;
        let deferred = DeferredSignatures::new(document);
        assert!(deferred.signatures.get().is_none(), "nothing made yet");
        let eager = sign_identity_document(document);
        for form in [
            SignedForm::Signature,
            SignedForm::Pkcs7,
            SignedForm::Rsa2048,
        ] {
            assert_eq!(deferred.get().form(form), eager.form(form));
        }
    }

    #[test]
    fn the_warm_up_makes_them_on_the_blocking_pool() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let deferred = DeferredSignatures::new(b"{}");
        runtime.block_on(async {
            deferred.warm_up();
            assert!(deferred.signatures.get().is_none(), "not during start-up");
            tokio::time::sleep(WARM_UP_AFTER * 2).await;
        });
        // Dropping the runtime waits for its blocking tasks.
        drop(runtime);
        assert!(deferred.signatures.get().is_some(), "made by the warm-up");
    }

    const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
    const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
    const ID_MESSAGE_DIGEST: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

    /// Shaped like EC2's: pretty-printed with `" : "`, no trailing newline.
    const DOCUMENT: &[u8] = br#"{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "us-east-1a",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0123456789abcdef0",
  "instanceId" : "i-0123456789abcdef0",
  "instanceType" : "t3.micro",
  "kernelId" : null,
  "pendingTime" : "2026-01-01T00:00:00Z",
  "privateIp" : "10.0.0.10",
  "ramdiskId" : null,
  "region" : "us-east-1",
  "version" : "2017-09-30"
}"#;

    fn certificate() -> Certificate {
        Certificate::from_pem(SIGNING_CERT_PEM).expect("embedded certificate parses")
    }

    fn certificate_public_key() -> RsaPublicKey {
        let spki = certificate()
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .expect("certificate key re-encodes");
        RsaPublicKey::from_public_key_der(&spki).expect("certificate key is RSA")
    }

    fn altered(document: &[u8]) -> Vec<u8> {
        let mut altered = document.to_vec();
        let at = altered.len() / 2;
        altered[at] ^= 0x01;
        altered
    }

    /// Checks one served SignedData the way a verifier given our certificate would, with
    /// `document` as the content whose digest must match. Returns what failed.
    fn verify_signed_data(served: &str, document: &[u8]) -> Result<(), String> {
        let der = BASE64
            .decode(served.replace('\n', ""))
            .map_err(|e| format!("not base64: {e}"))?;
        let info = ContentInfo::from_der(&der).map_err(|e| format!("not ContentInfo: {e}"))?;
        if info.content_type != ID_SIGNED_DATA {
            return Err(format!("content type is {}", info.content_type));
        }
        let signed: SignedData = info
            .content
            .decode_as()
            .map_err(|e| format!("not SignedData: {e}"))?;
        let [signer] = signed.signer_infos.0.as_slice() else {
            return Err("expected exactly one signer".into());
        };
        let cert = certificate();
        let expected_sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        });
        if signer.sid != expected_sid {
            return Err("signer is not our certificate's issuer and serial".into());
        }
        if signer.digest_alg.oid != ID_SHA256 {
            return Err(format!("digest is {}", signer.digest_alg.oid));
        }
        let attrs = signer.signed_attrs.as_ref().ok_or("no signed attributes")?;
        let value_of = |oid: ObjectIdentifier| {
            attrs
                .iter()
                .find(|a| a.oid == oid)
                .and_then(|a| a.values.iter().next())
                .map(|v| v.value().to_vec())
        };
        if value_of(ID_CONTENT_TYPE) != Some(ID_DATA.as_bytes().to_vec()) {
            return Err("content-type attribute is not id-data".into());
        }
        if value_of(ID_MESSAGE_DIGEST) != Some(Sha256::digest(document).to_vec()) {
            return Err("message-digest attribute does not match the document".into());
        }
        let signed_bytes = attrs.to_der().map_err(|e| e.to_string())?;
        let signature = Signature::try_from(signer.signature.as_bytes())
            .map_err(|e| format!("signature value: {e}"))?;
        VerifyingKey::<Sha256>::new(certificate_public_key())
            .verify(&signed_bytes, &signature)
            .map_err(|e| format!("RSA signature over the signed attributes: {e}"))
    }

    #[test]
    fn embedded_key_and_certificate_parse_and_match() {
        let material = load_material().expect("embedded key and certificate parse");
        let private_public = material.key.0.verifying_key().as_ref().clone();
        assert_eq!(private_public, certificate_public_key());
        assert_eq!(rsa::traits::PublicKeyParts::size(&private_public), 256);
        let subject = certificate().tbs_certificate.subject.to_string();
        assert!(subject.contains("NOT AWS"), "subject {subject}");
    }

    #[test]
    fn signature_verifies_with_the_certificate_key_and_fails_over_altered_bytes() {
        let served = sign_identity_document(DOCUMENT).signature;
        assert!(!served.contains('\n'));
        let signature = Signature::try_from(BASE64.decode(&served).unwrap().as_slice()).unwrap();
        let key = VerifyingKey::<Sha256>::new(certificate_public_key());
        key.verify(DOCUMENT, &signature)
            .expect("signature verifies over the document");
        assert!(key.verify(&altered(DOCUMENT), &signature).is_err());
    }

    #[test]
    fn pkcs7_and_rsa2048_are_signed_data_that_verify_over_the_document() {
        let signatures = sign_identity_document(DOCUMENT);
        for served in [&signatures.pkcs7, &signatures.rsa2048] {
            verify_signed_data(served, DOCUMENT).expect("SignedData verifies");
            let error = verify_signed_data(served, &altered(DOCUMENT)).unwrap_err();
            assert!(error.contains("message-digest"), "{error}");
        }
    }

    #[test]
    fn signed_data_encapsulates_the_document_and_omits_the_certificate_like_ec2() {
        let served = sign_identity_document(DOCUMENT).rsa2048;
        let der = BASE64.decode(served.replace('\n', "")).unwrap();
        let signed: SignedData = ContentInfo::from_der(&der)
            .unwrap()
            .content
            .decode_as()
            .unwrap();
        assert_eq!(signed.encap_content_info.econtent_type, ID_DATA);
        let content = signed
            .encap_content_info
            .econtent
            .expect("document is encapsulated");
        assert_eq!(content.value(), DOCUMENT);
        assert!(signed.certificates.is_none());
        assert!(signed.crls.is_none());
    }

    #[test]
    fn signed_data_is_served_as_base64_wrapped_at_64_columns_without_armour() {
        let served = sign_identity_document(DOCUMENT).pkcs7;
        assert!(!served.contains("-----"));
        assert!(!served.ends_with('\n'));
        let lines: Vec<&str> = served.split('\n').collect();
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|line| line.len() <= BASE64_LINE));
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l.len() == BASE64_LINE)
        );
    }

    #[test]
    fn same_document_gives_identical_signatures() {
        let first = sign_identity_document(DOCUMENT);
        let second = sign_identity_document(DOCUMENT);
        assert_eq!(first, second);
        assert_ne!(first, sign_identity_document(&altered(DOCUMENT)));
    }

    #[test]
    fn one_signing_takes_a_few_milliseconds() {
        let _ = sign_identity_document(DOCUMENT); // parse the key outside the measurement
        let rounds = 10;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(sign_identity_document(std::hint::black_box(DOCUMENT)));
        }
        let each = started.elapsed() / rounds;
        eprintln!("sign_identity_document: {each:?} per call (two RSA-2048 signatures)");
        assert!(each < std::time::Duration::from_secs(1), "{each:?}");
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let path = std::env::temp_dir()
                .join(format!("imds-tun-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&path).expect("create temp dir");
            TempDir(path)
        }

        fn write(&self, file: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(file);
            std::fs::write(&path, contents).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Whether to run an openssl-based test: fails under `CI=true` without openssl, else skips loudly.
    fn openssl_present() -> bool {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "openssl not found on PATH and CI=true: install it (apt-get install -y openssl)"
            );
            // Written to the stderr handle itself, past libtest's capture, so it shows in a
            // normal `cargo test` run and a skip is never mistaken for a pass.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"SKIPPED: openssl not found; the OpenSSL interoperability test did not run\n",
            );
        }
        found
    }

    /// Runs `openssl` with `args` in `dir`; returns (success, stdout, stderr).
    fn openssl(dir: &Path, args: &[&str]) -> (bool, Vec<u8>, String) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), out.stdout, stderr)
    }

    /// The file a client builds from the endpoint body, exactly as the AWS docs do it.
    fn armoured(served: &str) -> Vec<u8> {
        format!("-----BEGIN PKCS7-----\n{served}\n-----END PKCS7-----\n").into_bytes()
    }

    #[test]
    fn openssl_verifies_all_three_forms_against_the_published_certificate() {
        if !openssl_present() {
            return;
        }
        let signatures = sign_identity_document(DOCUMENT);
        let dir = TempDir::new("signing");
        dir.write("document", DOCUMENT);
        dir.write("altered", &altered(DOCUMENT));
        dir.write("cert.pem", SIGNING_CERT_PEM.as_bytes());
        dir.write(
            "signature",
            &BASE64.decode(&signatures.signature).expect("base64"),
        );
        dir.write("pkcs7", &armoured(&signatures.pkcs7));
        dir.write("rsa2048", &armoured(&signatures.rsa2048));

        let (ok, _, err) = openssl(
            &dir.0,
            &[
                "x509", "-pubkey", "-noout", "-in", "cert.pem", "-out", "key",
            ],
        );
        assert!(ok, "extract public key: {err}");
        let dgst = |document: &str| {
            openssl(
                &dir.0,
                &[
                    "dgst",
                    "-sha256",
                    "-verify",
                    "key",
                    "-signature",
                    "signature",
                    document,
                ],
            )
        };
        let (ok, _, err) = dgst("document");
        assert!(ok, "openssl dgst rejected `signature`: {err}");
        assert!(
            !dgst("altered").0,
            "openssl dgst accepted `signature` over altered bytes"
        );

        for form in ["pkcs7", "rsa2048"] {
            // Detached: the document comes from the `document` endpoint.
            let smime = |content: &str| {
                openssl(
                    &dir.0,
                    &[
                        "smime",
                        "-verify",
                        "-in",
                        form,
                        "-inform",
                        "PEM",
                        "-content",
                        content,
                        "-certfile",
                        "cert.pem",
                        "-noverify",
                    ],
                )
            };
            let (ok, out, err) = smime("document");
            assert!(ok, "openssl smime -content rejected `{form}`: {err}");
            assert_eq!(out, DOCUMENT);
            assert!(
                !smime("altered").0,
                "openssl smime accepted `{form}` over altered bytes"
            );

            // AWS docs' form: no -content, the document is read out of the SignedData.
            let (ok, out, err) = openssl(
                &dir.0,
                &[
                    "smime",
                    "-verify",
                    "-in",
                    form,
                    "-inform",
                    "PEM",
                    "-certfile",
                    "cert.pem",
                    "-noverify",
                ],
            );
            assert!(ok, "openssl smime (encapsulated) rejected `{form}`: {err}");
            assert_eq!(out, DOCUMENT);

            let (ok, out, err) = openssl(
                &dir.0,
                &[
                    "cms",
                    "-verify",
                    "-binary",
                    "-in",
                    form,
                    "-inform",
                    "PEM",
                    "-content",
                    "document",
                    "-certfile",
                    "cert.pem",
                    "-noverify",
                ],
            );
            assert!(ok, "openssl cms rejected `{form}`: {err}");
            assert_eq!(out, DOCUMENT);
        }
    }
}
