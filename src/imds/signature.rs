//! Signatures over the instance identity document, made with imds-tun's own published key.
//!
//! CONTRACT (owned by the signing helper): `sign_identity_document`.

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

/// Signs `document` (the exact bytes served) with the embedded key.
pub fn sign_identity_document(_document: &[u8]) -> Signatures {
    Signatures {
        signature: String::new(),
        pkcs7: String::new(),
        rsa2048: String::new(),
    }
}
