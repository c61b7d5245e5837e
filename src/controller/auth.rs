//! Bearer-token authentication. The token never appears in logs or
//! `Debug` output; comparison takes time independent of where the
//! presented token differs. The token file is read with
//! [`read_capped`]: a device (`/dev/zero`), a FIFO or a file over
//! [`MAX_TOKEN_FILE_BYTES`] fails at once instead of hanging or filling
//! memory.

use std::fmt;
use std::path::Path;

use axum::http::{header, HeaderMap};

use crate::fsutil::{read_capped, ReadError};

/// Largest token file (a token is tens of bytes; whitespace around it is
/// tolerated).
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The shared secret agents must present.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token file is unusable. Messages never include the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    /// (`cause` is in the message, not a `source`, so a chain printer
    /// does not say it twice.)
    #[error("failed to read token file {path}: {cause}")]
    Read { path: String, cause: ReadError },
    /// The file holds no token, or one that cannot go in an HTTP header.
    #[error("token file {path} must hold one token of visible ASCII characters (no spaces)")]
    Invalid { path: String },
}

impl Token {
    /// Builds a token; `None` if empty or not visible ASCII (it must fit an
    /// `Authorization` header unchanged).
    pub fn new(token: &str) -> Option<Token> {
        let ok = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Token(token.as_bytes().to_vec()))
    }

    /// Reads a token file: the whole file, surrounding whitespace trimmed.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let shown = path.display().to_string();
        let bytes = read_capped(path, MAX_TOKEN_FILE_BYTES).map_err(|cause| TokenError::Read {
            path: shown.clone(),
            cause,
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Invalid {
            path: shown.clone(),
        })?;
        Token::new(text.trim()).ok_or(TokenError::Invalid { path: shown })
    }

    /// True when `headers` carry `Authorization: Bearer <this token>`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(presented) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(presented, &self.0)
    }
}

/// Compares without an early exit: the time depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        let t = Token::new("s3cret").unwrap();
        assert!(t.admits(&headers("Bearer s3cret")));
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "bearer s3cret",
            "s3cret",
            "Bearer ",
            "Basic s3cret",
        ] {
            assert!(!t.admits(&headers(bad)), "{bad}");
        }
        assert!(!t.admits(&HeaderMap::new()));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(Token::new("").is_none());
        assert!(Token::new("has space").is_none());
    }

    #[test]
    fn token_files_are_read_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("token");
        std::fs::write(&ok, "  s3cret\n").unwrap();
        assert!(Token::from_file(&ok)
            .unwrap()
            .admits(&headers("Bearer s3cret")));
        let e = Token::from_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to read token file /dev/zero: is not a regular file (a character device)"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, "x".repeat(MAX_TOKEN_FILE_BYTES as usize + 1)).unwrap();
        assert_eq!(
            Token::from_file(&big).unwrap_err().to_string(),
            format!(
                "failed to read token file {}: is larger than {MAX_TOKEN_FILE_BYTES} bytes",
                big.display()
            )
        );
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            Token::from_file(&binary).unwrap_err(),
            TokenError::Invalid { .. }
        ));
    }

    #[test]
    fn equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
