//! JSON Web Token verification (RFC 7519 / 7515) for HS256, RS256 and ES256, with pure-Rust
//! RustCrypto primitives so it builds for `wasm32-unknown-unknown` with no JavaScript or WASI.
//! The clock comes from the host.

use std::rc::Rc;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// The signature algorithms accepted; `none` and everything else are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    HS256,
    RS256,
    ES256,
}

/// A key that can check signatures of one algorithm.
#[derive(Clone)]
pub enum VerifyingKey {
    Hmac(Vec<u8>),
    Rsa(rsa::pkcs1v15::VerifyingKey<Sha256>),
    Ecdsa(p256::ecdsa::VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "Hmac(..)",
            Self::Rsa(_) => "Rsa(..)",
            Self::Ecdsa(_) => "Ecdsa(..)",
        })
    }
}

/// A key with what selects it: its algorithm and, optionally, its key id.
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: VerifyingKey,
}

/// Why a token was refused; the text goes in `WWW-Authenticate: ... error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

fn invalid(reason: impl Into<String>) -> Invalid {
    Invalid(reason.into())
}

/// What a token must say besides carrying a good signature.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub issuer: Option<String>,
    /// The token's `aud` must name at least one of these (if any are given).
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub require_exp: bool,
}

/// What the claims checks read from a token's claims for one provider's expectations: read once
/// for a token remembered as verified, so each later request compares two numbers with the clock
/// instead of looking up four claims and comparing the issuer and audiences again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimFacts {
    /// `exp`: absent (`None`), not a number (`Some(None)`), or the time.
    exp: Option<Option<u64>>,
    /// `nbf`, likewise.
    nbf: Option<Option<u64>>,
    /// `iss` is the expected issuer (or none is expected).
    issuer_ok: bool,
    /// `aud` names an expected audience (or none is expected).
    audience_ok: bool,
}

impl ClaimFacts {
    pub fn read(claims: &serde_json::Map<String, Value>, expect: &Expectations) -> Self {
        let issuer_ok = expect.issuer.as_ref().is_none_or(|issuer| {
            claims.get("iss").and_then(Value::as_str) == Some(issuer.as_str())
        });
        let named = |aud: &str| expect.audiences.iter().any(|a| a == aud);
        let audience_ok = expect.audiences.is_empty()
            || match claims.get("aud") {
                Some(Value::String(aud)) => named(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(named),
                _ => false,
            };
        Self {
            exp: claims.get("exp").map(Value::as_u64),
            nbf: claims.get("nbf").map(Value::as_u64),
            issuer_ok,
            audience_ok,
        }
    }

    /// The claims checks at `now_secs` (Unix time), in their order: expiry, not-before, issuer,
    /// audience.
    pub fn check(&self, expect: &Expectations, now_secs: u64) -> Result<(), Invalid> {
        let leeway = expect.leeway.as_secs();
        match self.exp {
            Some(Some(exp)) if exp.saturating_add(leeway) < now_secs => {
                return Err(invalid("the token has expired"));
            }
            Some(None) => return Err(invalid("exp is not a number")),
            None if expect.require_exp => return Err(invalid("the token has no exp")),
            _ => {}
        }
        match self.nbf {
            Some(Some(nbf)) if nbf > now_secs.saturating_add(leeway) => {
                return Err(invalid("the token is not valid yet"));
            }
            Some(None) => return Err(invalid("nbf is not a number")),
            _ => {}
        }
        if !self.issuer_ok {
            return Err(invalid("wrong issuer"));
        }
        if !self.audience_ok {
            return Err(invalid("wrong audience"));
        }
        Ok(())
    }
}

/// The parts of a token, decoded but not yet trusted.
#[derive(Debug)]
pub struct Token<'t> {
    pub alg: String,
    pub kid: Option<String>,
    signed: &'t str,
    signature: Vec<u8>,
    /// Shared, so a token remembered as verified hands its claims out without parsing again.
    pub claims: Rc<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl<'t> Token<'t> {
    /// Splits and decodes a compact JWS; checks nothing yet.
    pub fn parse(token: &'t str) -> Result<Self, Invalid> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWT (expected three dot-separated parts)"));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| invalid(format!("the {what} is not base64url")))
        };
        let header: Header = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|_| invalid("the header is not a JWT header"))?;
        let claims: Value = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|_| invalid("the payload is not JSON"))?;
        let Value::Object(claims) = claims else {
            return Err(invalid("the payload is not a JSON object"));
        };
        let signed_len = token.len() - signature.len() - 1;
        Ok(Self {
            alg: header.alg,
            kid: header.kid,
            signed: &token[..signed_len],
            signature: decode(signature, "signature")?,
            claims: Rc::new(claims),
        })
    }

    /// A token whose signature was verified before, from its remembered claims.
    pub fn remembered(
        token: &'t str,
        alg: &str,
        claims: Rc<serde_json::Map<String, Value>>,
    ) -> Self {
        Self {
            alg: alg.to_owned(),
            kid: None,
            signed: token,
            signature: Vec::new(),
            claims,
        }
    }

    /// Checks the signature with `key`, which must be for the token's algorithm.
    pub fn verify_signature(&self, key: &Key) -> Result<(), Invalid> {
        if self.alg != key.alg.name() {
            return Err(invalid(format!(
                "algorithm {} does not match the key",
                self.alg
            )));
        }
        let message = self.signed.as_bytes();
        let good = match &key.key {
            VerifyingKey::Hmac(secret) => Hmac::<Sha256>::new_from_slice(secret)
                .map(|mut mac| {
                    mac.update(message);
                    mac.verify_slice(&self.signature).is_ok()
                })
                .unwrap_or(false),
            VerifyingKey::Rsa(rsa_key) => {
                use rsa::signature::Verifier as _;
                rsa::pkcs1v15::Signature::try_from(self.signature.as_slice())
                    .is_ok_and(|sig| rsa_key.verify(message, &sig).is_ok())
            }
            VerifyingKey::Ecdsa(ec_key) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(&self.signature)
                    .is_ok_and(|sig| ec_key.verify(message, &sig).is_ok())
            }
        };
        if good {
            Ok(())
        } else {
            Err(invalid("bad signature"))
        }
    }

    /// A claim as header text: strings as they are, other JSON as JSON.
    pub fn claim_text(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }
}

impl Key {
    /// An HMAC secret.
    pub fn hmac(kid: Option<String>, secret: &[u8]) -> Self {
        Self {
            kid,
            alg: Algorithm::HS256,
            key: VerifyingKey::Hmac(secret.to_vec()),
        }
    }

    /// A public key in PEM: `BEGIN PUBLIC KEY` (RSA or P-256) or `BEGIN RSA PUBLIC KEY`.
    pub fn from_pem(kid: Option<String>, alg: Algorithm, pem: &str) -> Result<Self, String> {
        let key = match alg {
            Algorithm::HS256 => return Err("HS256 takes a secret, not a PEM key".into()),
            Algorithm::RS256 => {
                use rsa::pkcs1::DecodeRsaPublicKey as _;
                use rsa::pkcs8::DecodePublicKey as _;
                let public = rsa::RsaPublicKey::from_public_key_pem(pem.trim())
                    .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem.trim()))
                    .map_err(|e| format!("not an RSA public key in PEM: {e}"))?;
                VerifyingKey::Rsa(rsa::pkcs1v15::VerifyingKey::new(public))
            }
            Algorithm::ES256 => {
                use p256::pkcs8::DecodePublicKey as _;
                let public = p256::PublicKey::from_public_key_pem(pem.trim())
                    .map_err(|e| format!("not a P-256 public key in PEM: {e}"))?;
                VerifyingKey::Ecdsa(p256::ecdsa::VerifyingKey::from(public))
            }
        };
        Ok(Self { kid, alg, key })
    }

    /// One key of a JWKS document (RFC 7517): RSA (`n`, `e`), EC P-256 (`x`, `y`) or `oct`
    /// (`k`). Keys for other uses or algorithms give `None` and are skipped.
    pub fn from_jwk(jwk: &Value) -> Option<Self> {
        let text = |name: &str| jwk.get(name).and_then(Value::as_str);
        let bytes = |name: &str| {
            text(name).and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
        };
        if text("use").is_some_and(|u| u != "sig") {
            return None;
        }
        let kid = text("kid").map(str::to_owned);
        let (alg, key) = match text("kty")? {
            "RSA" => {
                let n = rsa::BigUint::from_bytes_be(&bytes("n")?);
                let e = rsa::BigUint::from_bytes_be(&bytes("e")?);
                let public = rsa::RsaPublicKey::new(n, e).ok()?;
                (
                    Algorithm::RS256,
                    VerifyingKey::Rsa(rsa::pkcs1v15::VerifyingKey::new(public)),
                )
            }
            "EC" if text("crv") == Some("P-256") => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let point = p256::EncodedPoint::from_affine_coordinates(
                    p256::FieldBytes::from_slice(&x),
                    p256::FieldBytes::from_slice(&y),
                    false,
                );
                let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point).ok()?;
                (Algorithm::ES256, VerifyingKey::Ecdsa(key))
            }
            "oct" => (Algorithm::HS256, VerifyingKey::Hmac(bytes("k")?)),
            _ => return None,
        };
        if text("alg").is_some_and(|a| a != alg.name()) {
            return None;
        }
        Some(Self { kid, alg, key })
    }
}

/// Every usable key of a JWKS document.
pub fn parse_jwks(document: &[u8]) -> Result<Vec<Key>, String> {
    let jwks: Value =
        serde_json::from_slice(document).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no \"keys\" array")?;
    Ok(keys.iter().filter_map(Key::from_jwk).collect())
}
