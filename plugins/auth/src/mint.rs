//! Making signed tokens and JWKS documents natively, for tests and for trying the plugin out
//! (`cargo test` here, and the proxy's integration tests). Not compiled into the plugin.
//! A malformed key panics: this only runs in tests and tooling, where that is the right failure.
#![allow(clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A compact JWS of `claims`, signed with an HMAC secret.
pub fn hs256(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let signing_input = signing_input("HS256", kid, claims);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    finish(signing_input, &mac.finalize().into_bytes())
}

/// A compact JWS of `claims`, signed with an RSA private key (PKCS#8 PEM).
pub fn rs256(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem).expect("an RSA private key in PEM");
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
    let signing_input = signing_input("RS256", kid, claims);
    let signature = signer.sign(signing_input.as_bytes()).to_vec();
    finish(signing_input, &signature)
}

/// A compact JWS of `claims`, signed with a P-256 private key (PKCS#8 PEM).
pub fn es256(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::DecodePrivateKey as _;
    let key =
        p256::ecdsa::SigningKey::from_pkcs8_pem(private_pem).expect("a P-256 private key in PEM");
    let signing_input = signing_input("ES256", kid, claims);
    let signature: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
    finish(signing_input, &signature.to_bytes())
}

/// A JWKS document holding the public half of an RSA private key (PKCS#8 PEM) under `kid`.
pub fn rsa_jwks(private_pem: &str, kid: &str) -> String {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem).expect("an RSA private key in PEM");
    let b64 = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
    json!({ "keys": [ {
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": b64(key.n()), "e": b64(key.e()),
    } ] })
    .to_string()
}

fn signing_input(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn finish(signing_input: String, signature: &[u8]) -> String {
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}
