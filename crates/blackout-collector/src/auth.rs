//! Authentication, in one place: who may upload, and as which agent.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::ingest::IngestError;

/// The token of an `Authorization` header value: `Bearer TOKEN`, the scheme in any case
/// (RFC 7235: auth schemes are case-insensitive), spaces around the token ignored.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Who is uploading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploader {
    /// The agent inside `blackout standalone`: trusted, no token.
    InProcess,
    /// A bearer token from the HTTP request, if any.
    Token(Option<String>),
}

/// The agents' tokens, by SHA-256 (the configuration holds only hashes).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], String>,
}

impl Tokens {
    /// From the configuration's `[agents]`: agent id -> SHA-256 of its token.
    pub fn new(agents: &[(String, [u8; 32])]) -> Tokens {
        Tokens {
            by_hash: agents
                .iter()
                .map(|(id, hash)| (*hash, id.clone()))
                .collect(),
        }
    }

    /// The agent a token belongs to.
    pub fn agent_of(&self, token: &str) -> Option<&str> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash).map(String::as_str)
    }

    /// Checks that `up` may upload a batch of `batch_agent`.
    pub fn authenticate(&self, up: &Uploader, batch_agent: &str) -> Result<(), IngestError> {
        let token = match up {
            Uploader::InProcess => return Ok(()),
            Uploader::Token(t) => t.as_deref().ok_or(IngestError::Unauthorized)?,
        };
        let agent = self.agent_of(token).ok_or(IngestError::Unauthorized)?;
        if agent != batch_agent {
            return Err(IngestError::Forbidden {
                token_agent: agent.to_string(),
                batch_agent: batch_agent.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        let cases = [
            ("Bearer tok", Some("tok")),
            ("bearer tok", Some("tok")),
            ("BEARER tok", Some("tok")),
            ("bEaReR   tok  ", Some("tok")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Basic dG9rOg==", None),
            ("Bearertok", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(bearer_token(value), want, "{value:?}");
        }
    }
}
