//! What an upload's headers say about its body, and the body's decoding: JSON (today's
//! agents, old agents, `curl`) or the compact batch ([`blackout_model::compact`]), under
//! no content coding, `zstd` or `gzip`.
//!
//! Decompression is bounded by what it produces, not by what arrived: a few KiB of zstd
//! can expand to gigabytes, so the decoded bytes are taken from the same body budget
//! and held to the same `max_body_bytes` as a plain body.

use std::io::Read;

use blackout_model::compact;
use blackout_model::observation::Batch;

/// The coding of an upload's body, a closed set: the label of
/// `blackout_upload_bytes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Compact,
}

impl Encoding {
    pub const ALL: [Encoding; 2] = [Encoding::Json, Encoding::Compact];

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Compact => "compact",
        }
    }
}

/// A content coding the collector undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Zstd,
    Gzip,
}

/// What the `Accept-Encoding` of a 415 lists: the codings [`Coding`] knows.
pub const ACCEPTED_CODINGS: &str = "zstd, gzip";

/// Why the headers ask for something the collector does not speak (415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("content coding {0:?} is not supported (zstd, gzip or none)")]
    Coding(String),
    #[error("content type {0:?} is not supported ({ct} or JSON)", ct = compact::CONTENT_TYPE)]
    Type(String),
}

/// The body's format and coding as its headers declare them. A body with any content
/// type other than the compact one's is read as JSON, as before the compact batch (a
/// `curl -d` upload says `application/x-www-form-urlencoded`); only a later version of
/// the compact type is refused, so that its agent falls back.
pub fn negotiate(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(Encoding, Coding), Unsupported> {
    let coding = match content_encoding.map(|v| v.trim().to_ascii_lowercase()) {
        None => Coding::Identity,
        Some(v) if v.is_empty() || v == "identity" => Coding::Identity,
        Some(v) if v == "zstd" => Coding::Zstd,
        Some(v) if v == "gzip" || v == "x-gzip" => Coding::Gzip,
        Some(v) => return Err(Unsupported::Coding(v)),
    };
    let essence = content_type
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let encoding = match essence.as_deref() {
        Some(t) if t == compact::CONTENT_TYPE => Encoding::Compact,
        Some(t) if t.starts_with("application/vnd.blackout.batch") => {
            return Err(Unsupported::Type(t.to_string()));
        }
        _ => Encoding::Json,
    };
    Ok((encoding, coding))
}

/// Why a coded body could not be undone.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The decoded body would exceed `max_body_bytes`.
    #[error("decoded body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// The budget could not hold the decoded bytes.
    #[error("memory budget")]
    Budget,
    #[error("body is not valid {coding}: {reason}")]
    Corrupt {
        coding: &'static str,
        reason: String,
    },
}

/// Undoes `coding` over `body`, at most `limit` decoded bytes; `grow(n)` is asked before
/// the output grows to `n` bytes and says whether the memory may be taken.
pub fn decompress(
    coding: Coding,
    body: &[u8],
    limit: usize,
    grow: &mut dyn FnMut(usize) -> bool,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let (name, mut reader): (&'static str, Box<dyn Read + '_>) = match coding {
        Coding::Identity => return Ok(None),
        Coding::Zstd => (
            "zstd",
            Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(|e| {
                DecodeError::Corrupt {
                    coding: "zstd",
                    reason: e.to_string(),
                }
            })?),
        ),
        Coding::Gzip => ("gzip", Box::new(flate2::read::GzDecoder::new(body))),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(Some(out)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    coding: name,
                    reason: e.to_string(),
                });
            }
        };
        let need = out.len() + n;
        if need > limit {
            return Err(DecodeError::TooLarge(limit));
        }
        if need > out.capacity() {
            let want = need.max(2 * out.capacity()).max(chunk.len()).min(limit);
            if !grow(want) {
                return Err(DecodeError::Budget);
            }
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Why a decoded body is not a batch.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A compact batch bigger than a JSON body within `max_body_bytes` could be (413).
    #[error("{0}")]
    TooLarge(compact::CompactError),
    #[error("{0}")]
    Malformed(String),
}

/// The batch in a (decoded) body; a compact one may hold no more than a JSON body of
/// `limit` bytes could (see [`compact::decode_at_most`]).
pub fn parse(encoding: Encoding, body: &[u8], limit: usize) -> Result<Batch, ParseError> {
    match encoding {
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))
        }
        Encoding::Compact => compact::decode_at_most(body, limit).map_err(|e| match e {
            compact::CompactError::TooLarge(_) => ParseError::TooLarge(e),
            e => ParseError::Malformed(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_choose_format_and_coding() {
        let ct = compact::CONTENT_TYPE;
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<(Encoding, Coding), Unsupported>,
        );
        let cases: Vec<Case> = vec![
            (None, None, Ok((Encoding::Json, Coding::Identity))),
            (
                Some("application/json"),
                None,
                Ok((Encoding::Json, Coding::Identity)),
            ),
            (
                Some("application/x-www-form-urlencoded"),
                Some("identity"),
                Ok((Encoding::Json, Coding::Identity)),
            ),
            (
                Some(ct),
                Some("zstd"),
                Ok((Encoding::Compact, Coding::Zstd)),
            ),
            (
                Some("Application/Vnd.Blackout.Batch.V2; charset=binary"),
                Some("GZIP"),
                Ok((Encoding::Compact, Coding::Gzip)),
            ),
            (
                Some("application/json"),
                Some("zstd"),
                Ok((Encoding::Json, Coding::Zstd)),
            ),
            (Some(ct), Some("br"), Err(Unsupported::Coding("br".into()))),
            (
                Some("application/vnd.blackout.batch.v3"),
                None,
                Err(Unsupported::Type(
                    "application/vnd.blackout.batch.v3".into(),
                )),
            ),
        ];
        for (t, e, want) in cases {
            assert_eq!(negotiate(t, e), want, "{t:?} {e:?}");
        }
    }

    #[test]
    fn decompression_stops_at_the_limit_and_asks_before_growing() {
        let big = vec![b'x'; 10 << 20];
        let z = zstd::encode_all(&big[..], 3).unwrap();
        assert!(z.len() < 4096, "{}", z.len());
        let mut asked = Vec::new();
        let e = decompress(Coding::Zstd, &z, 1 << 20, &mut |n| {
            asked.push(n);
            true
        })
        .unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge(n) if n == 1 << 20), "{e}");
        assert!(asked.iter().all(|n| *n <= 1 << 20), "{asked:?}");
        let e = decompress(Coding::Zstd, &z, 100 << 20, &mut |n| n <= 2 << 20).unwrap_err();
        assert!(matches!(e, DecodeError::Budget), "{e}");
        let out = decompress(Coding::Zstd, &z, 100 << 20, &mut |_| true).unwrap();
        assert_eq!(out.unwrap().len(), big.len());
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut g, b"{\"a\":1}").unwrap();
        let gz = g.finish().unwrap();
        let out = decompress(Coding::Gzip, &gz, 100, &mut |_| true).unwrap();
        assert_eq!(out.unwrap(), b"{\"a\":1}");
        assert!(matches!(
            decompress(Coding::Zstd, b"not zstd", 100, &mut |_| true),
            Err(DecodeError::Corrupt { coding: "zstd", .. })
        ));
    }
}
