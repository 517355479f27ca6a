//! PEM RSA public keys → the PKCS#1 `RSAPublicKey` DER that `ring` verifies with.
//!
//! Adobe serves SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`):
//! `SEQUENCE { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }`.
//! `ring` wants the inner `RSAPublicKey`, so this unwraps it with a minimal, strict DER reader.
//! PKCS#1 PEM (`-----BEGIN RSA PUBLIC KEY-----`) is accepted as is.

use base64::Engine;

/// DER encoding of the rsaEncryption OID 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_OID: u8 = 0x06;
const TAG_NULL: u8 = 0x05;
const TAG_BIT_STRING: u8 = 0x03;

/// Extracts the `RSAPublicKey` DER from a PEM public key.
pub(crate) fn rsa_public_key_der(pem: &str) -> Result<Vec<u8>, String> {
    if let Some(der) = pem_block(pem, "PUBLIC KEY")? {
        return spki_to_rsa_public_key(&der);
    }
    if let Some(der) = pem_block(pem, "RSA PUBLIC KEY")? {
        let (tag, _, rest) = read_tlv(&der)?;
        if tag != TAG_SEQUENCE || !rest.is_empty() {
            return Err("RSA PUBLIC KEY is not one DER SEQUENCE".into());
        }
        return Ok(der);
    }
    Err("no `BEGIN PUBLIC KEY` PEM block".into())
}

fn pem_block(pem: &str, label: &str) -> Result<Option<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = pem.find(&begin) else {
        return Ok(None);
    };
    let body_start = start + begin.len();
    let Some(stop) = pem[body_start..].find(&end) else {
        return Err(format!("`{begin}` without `{end}`"));
    };
    let b64: String = pem[body_start..body_start + stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(Some)
        .map_err(|e| format!("PEM base64: {e}"))
}

fn spki_to_rsa_public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let (tag, spki, rest) = read_tlv(der)?;
    if tag != TAG_SEQUENCE || !rest.is_empty() {
        return Err("SubjectPublicKeyInfo is not one DER SEQUENCE".into());
    }
    let (tag, alg, rest) = read_tlv(spki)?;
    if tag != TAG_SEQUENCE {
        return Err("AlgorithmIdentifier is not a SEQUENCE".into());
    }
    let (tag, oid, params) = read_tlv(alg)?;
    if tag != TAG_OID || oid != RSA_ENCRYPTION_OID {
        return Err("the key is not an RSA key (rsaEncryption OID expected)".into());
    }
    if !params.is_empty() {
        let (tag, null, extra) = read_tlv(params)?;
        if tag != TAG_NULL || !null.is_empty() || !extra.is_empty() {
            return Err("unexpected RSA algorithm parameters".into());
        }
    }
    let (tag, bits, extra) = read_tlv(rest)?;
    if tag != TAG_BIT_STRING || !extra.is_empty() {
        return Err("subjectPublicKey is not a BIT STRING".into());
    }
    match bits.split_first() {
        Some((0, key)) if !key.is_empty() => Ok(key.to_vec()),
        _ => Err("subjectPublicKey has unused bits or is empty".into()),
    }
}

/// Reads one DER TLV: (tag, value, remaining input).
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let short = || "truncated DER".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(short)?;
    let (&first, rest) = rest.split_first().ok_or_else(short)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad DER length".into());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        if len < 0x80 || rest[0] == 0 {
            return Err("non-minimal DER length".into());
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(short());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first two lines of a test public key: a PEM block whose DER is cut short.
    const TRUNCATED: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvWeVo85rFwkcJSB2Brlh
ZV1q7cVKe1pN1Qm3JtZ9kXlq0eQeT1I0AAKk5lRTv4i2zJZ0Jp0nXz6Q0Sxq0K0k
-----END PUBLIC KEY-----";

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(rsa_public_key_der("hello").is_err());
        assert!(rsa_public_key_der(TRUNCATED).is_err());
        assert!(rsa_public_key_der("-----BEGIN PUBLIC KEY-----\nAAAA").is_err());
        assert!(
            read_tlv(&[0x30, 0x81, 0x05, 1, 2, 3, 4, 5]).is_err(),
            "non-minimal"
        );
    }

    #[test]
    fn unwraps_a_hand_built_spki() {
        // SEQUENCE { SEQUENCE { OID rsa, NULL }, BIT STRING { 00, SEQUENCE { INTEGER 5, INTEGER 3 } } }
        let inner = [0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03];
        let mut alg = vec![0x30, 0x0d, 0x06, 0x09];
        alg.extend_from_slice(RSA_ENCRYPTION_OID);
        alg.extend_from_slice(&[0x05, 0x00]);
        let mut bits = vec![0x03, (inner.len() + 1) as u8, 0x00];
        bits.extend_from_slice(&inner);
        let mut body = alg.clone();
        body.extend_from_slice(&bits);
        let mut der = vec![0x30, body.len() as u8];
        der.extend_from_slice(&body);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert_eq!(rsa_public_key_der(&pem).unwrap(), inner);
        let pkcs1 = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(inner)
        );
        assert_eq!(rsa_public_key_der(&pkcs1).unwrap(), inner);
        // An EC key OID is refused.
        let mut ec = der.clone();
        ec[6 + 8] = 0x02;
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&ec)
        );
        assert!(rsa_public_key_der(&pem).is_err());
    }
}
