//! Public keys of `sigstoreSigned` requirements: PEM `PUBLIC KEY` (SubjectPublicKeyInfo), ECDSA
//! on P-256 only, as `cosign generate-key-pair` writes them. Signatures are ASN.1 DER over
//! SHA-256 of the signed bytes: the one scheme cosign and containers/image use with such keys
//! ("no information about the signature scheme is included in the object").

use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;

/// A key a policy names, and what to call it in verdicts (its path, or `keyData #n`).
#[derive(Clone)]
pub struct PublicKey {
    pub name: String,
    /// `sha256:<hex>` of the key's uncompressed SEC1 point, so a verdict can say which key without
    /// the path.
    pub fingerprint: String,
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} {})", self.name, self.fingerprint)
    }
}

/// `pem` (named `name` in errors) as a P-256 public key.
pub fn parse(pem: &[u8], name: &str) -> Result<PublicKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| format!("key {name}: not PEM text"))?;
    let key = VerifyingKey::from_public_key_pem(text.trim())
        .map_err(|e| format!("key {name}: not an ECDSA P-256 PEM public key ({e})"))?;
    let der = key.to_encoded_point(false);
    let fingerprint = format!("sha256:{:x}", sha2::Sha256::digest(der.as_bytes()));
    Ok(PublicKey { name: name.to_string(), fingerprint, key })
}

impl PublicKey {
    /// Whether `der` is this key's ECDSA signature over SHA-256 of `message`.
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        self.verifies_prehashed(&sha2::Sha256::digest(message), der)
    }

    /// [`PublicKey::verifies`] of the message whose SHA-256 is `hash` (hashed once for every key
    /// and signature that may verify it).
    pub fn verifies_prehashed(&self, hash: &[u8], der: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        match Signature::from_der(der) {
            Ok(sig) => self.key.verify_prehash(hash, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    /// A signing key made from `seed` and its public key's PEM.
    pub(crate) fn key_pair(seed: &str) -> (SigningKey, String) {
        let scalar = sha2::Sha256::digest(seed.as_bytes());
        let sk = SigningKey::from_bytes(&scalar).expect("a scalar");
        let pem = sk.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).expect("pem");
        (sk, pem)
    }

    pub(crate) fn sign(sk: &SigningKey, message: &[u8]) -> Vec<u8> {
        let sig: Signature = sk.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    #[test]
    fn a_p256_key_verifies_its_own_signatures_only() {
        let (sk, pem) = key_pair("a");
        let (other, _) = key_pair("b");
        let k = parse(pem.as_bytes(), "a.pub").expect("key");
        assert!(k.verifies(b"payload", &sign(&sk, b"payload")));
        assert!(!k.verifies(b"payload2", &sign(&sk, b"payload")));
        assert!(!k.verifies(b"payload", &sign(&other, b"payload")));
        assert!(!k.verifies(b"payload", b"not der"));
        assert!(parse(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "x").is_err());
        assert!(parse(&[0xff, 0xfe], "x").is_err());
    }
}
