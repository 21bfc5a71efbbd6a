//! Maps errors from io, hickory, reqwest and surge-ping to the closed failure vocabulary.
//!
//! A failure label is only meaningful with the operation that failed (OONI's lesson): the
//! same `ECONNRESET` means "the TCP connection was cut" in `connect` and "a middlebox killed
//! the request" in `http_round_trip`. Anything that cannot be mapped is `unknown`; error text
//! never becomes a label.

use std::error::Error as StdError;
use std::io;

use hickory_proto::op::ResponseCode;
use hickory_resolver::net::{DnsError, NetError};

use crate::observation::{Failure, Phase};

/// Maps an I/O error by its raw OS error first (the kernel's word is the most precise),
/// then by its kind.
pub fn io_failure(e: &io::Error) -> Failure {
    if let Some(f) = e.raw_os_error().and_then(errno_failure) {
        return f;
    }
    kind_failure(e.kind())
}

/// Raw errno values seen on connect, send and receive.
pub fn errno_failure(code: i32) -> Option<Failure> {
    Some(match code {
        libc::ECONNREFUSED => Failure::Refused,
        libc::ECONNRESET | libc::ECONNABORTED | libc::EPIPE => Failure::Reset,
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN => {
            Failure::Unreachable
        }
        // A local firewall (nftables reject/drop on output) answers send() with EPERM/EACCES:
        // the path is closed, which is what "unreachable" means to the detector.
        libc::EPERM | libc::EACCES => Failure::Unreachable,
        libc::ETIMEDOUT => Failure::Timeout,
        _ => return None,
    })
}

fn kind_failure(kind: io::ErrorKind) -> Failure {
    use io::ErrorKind as K;
    match kind {
        K::TimedOut | K::WouldBlock => Failure::Timeout,
        K::ConnectionRefused => Failure::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Failure::Reset,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => Failure::Unreachable,
        K::UnexpectedEof => Failure::Eof,
        _ => Failure::Unknown,
    }
}

/// Maps a DNS response code that is not a success.
pub fn rcode_failure(rcode: ResponseCode) -> Failure {
    match rcode {
        ResponseCode::NXDomain => Failure::DnsNxdomain,
        ResponseCode::ServFail => Failure::DnsServfail,
        ResponseCode::Refused => Failure::DnsRefused,
        _ => Failure::DnsBadResponse,
    }
}

/// Maps an error of the hickory resolver (used for the system resolver).
pub fn hickory_failure(e: &NetError) -> Failure {
    if e.is_nx_domain() {
        return Failure::DnsNxdomain;
    }
    if e.is_no_records_found() {
        return Failure::DnsNoAnswer;
    }
    match e {
        NetError::Timeout => Failure::Timeout,
        NetError::Io(io) => io_failure(io),
        NetError::Dns(DnsError::ResponseCode(code)) => rcode_failure(*code),
        NetError::Proto(_) | NetError::QueryCaseMismatch | NetError::ForeignClassRecord { .. } => {
            Failure::DnsBadResponse
        }
        NetError::Truncated => Failure::DnsBadResponse,
        _ => Failure::Unknown,
    }
}

/// Maps a surge-ping error of one echo request.
pub fn surge_failure(e: &surge_ping::SurgeError) -> Failure {
    use surge_ping::SurgeError as S;
    match e {
        S::Timeout { .. } => Failure::Timeout,
        S::IOError(io) => io_failure(io),
        _ => Failure::Unknown,
    }
}

/// Walks an error's source chain, outermost first. `io::Error::source` skips the error it
/// wraps (it returns the wrapped error's source), so wrapped errors are entered through
/// `get_ref` instead: hyper wraps tokio-rustls's `io::Error`, which wraps `rustls::Error`.
fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(e);
    std::iter::from_fn(move || {
        let cur = next?;
        next = match cur.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => cur.source(),
        };
        Some(cur)
    })
}

/// Whether a rustls error is anywhere in the chain.
fn find_rustls(e: &(dyn StdError + 'static)) -> bool {
    chain(e).any(|e| e.is::<rustls::Error>())
}

/// The innermost io error in the chain that maps to a known failure.
fn find_io(e: &(dyn StdError + 'static)) -> Option<Failure> {
    chain(e)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .map(io_failure)
        .filter(|f| *f != Failure::Unknown)
        .last()
}

fn find_hyper(e: &(dyn StdError + 'static)) -> Option<Failure> {
    chain(e)
        .filter_map(|e| e.downcast_ref::<hyper::Error>())
        .find_map(|h| {
            if h.is_incomplete_message() {
                Some(Failure::Eof)
            } else if h.is_parse() || h.is_parse_status() || h.is_user() {
                Some(Failure::HttpProtocolError)
            } else if h.is_timeout() {
                Some(Failure::Timeout)
            } else {
                None
            }
        })
}

/// Maps a reqwest error to the phase that failed and its label, walking the source chain:
/// rustls errors are `tls_error` in `tls_handshake`, io errors use the io mapping.
pub fn reqwest_failure(e: &reqwest::Error) -> (Phase, Failure) {
    let dyn_e: &(dyn StdError + 'static) = e;
    if e.is_redirect() {
        return (Phase::HttpRoundTrip, Failure::HttpTooManyRedirects);
    }
    if find_rustls(dyn_e) {
        return (Phase::TlsHandshake, Failure::TlsError);
    }
    if e.is_dns() {
        // getaddrinfo reports "no such name" only as text; EAI codes are not exposed.
        let nx = chain(dyn_e).any(|e| {
            let s = e.to_string();
            s.contains("not known") || s.contains("No address associated")
        });
        let f = if e.is_timeout() {
            Failure::Timeout
        } else if nx {
            Failure::DnsNxdomain
        } else {
            Failure::Unknown
        };
        return (Phase::Resolve, f);
    }
    if e.is_connect() {
        let f = if e.is_timeout() {
            Failure::Timeout
        } else {
            find_io(dyn_e).unwrap_or(Failure::Unknown)
        };
        return (Phase::Connect, f);
    }
    if e.is_timeout() {
        return (Phase::HttpRoundTrip, Failure::Timeout);
    }
    let f = find_io(dyn_e)
        .or_else(|| find_hyper(dyn_e))
        .unwrap_or(Failure::Unknown);
    (Phase::HttpRoundTrip, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        let cases = [
            (libc::ECONNREFUSED, Failure::Refused),
            (libc::ECONNRESET, Failure::Reset),
            (libc::ECONNABORTED, Failure::Reset),
            (libc::EPIPE, Failure::Reset),
            (libc::EHOSTUNREACH, Failure::Unreachable),
            (libc::ENETUNREACH, Failure::Unreachable),
            (libc::ENETDOWN, Failure::Unreachable),
            (libc::EPERM, Failure::Unreachable),
            (libc::ETIMEDOUT, Failure::Timeout),
            (libc::ENOENT, Failure::Unknown),
        ];
        for (code, want) in cases {
            let e = io::Error::from_raw_os_error(code);
            assert_eq!(io_failure(&e), want, "errno {code} ({e})");
        }
    }

    #[test]
    fn io_kind_table() {
        use io::ErrorKind as K;
        let cases = [
            (K::TimedOut, Failure::Timeout),
            (K::ConnectionRefused, Failure::Refused),
            (K::ConnectionReset, Failure::Reset),
            (K::BrokenPipe, Failure::Reset),
            (K::HostUnreachable, Failure::Unreachable),
            (K::NetworkUnreachable, Failure::Unreachable),
            (K::UnexpectedEof, Failure::Eof),
            (K::InvalidData, Failure::Unknown),
        ];
        for (kind, want) in cases {
            assert_eq!(io_failure(&io::Error::from(kind)), want, "{kind:?}");
        }
    }

    #[test]
    fn rcode_table() {
        let cases = [
            (ResponseCode::NXDomain, Failure::DnsNxdomain),
            (ResponseCode::ServFail, Failure::DnsServfail),
            (ResponseCode::Refused, Failure::DnsRefused),
            (ResponseCode::FormErr, Failure::DnsBadResponse),
            (ResponseCode::NotImp, Failure::DnsBadResponse),
        ];
        for (code, want) in cases {
            assert_eq!(rcode_failure(code), want, "{code:?}");
        }
    }

    #[test]
    fn hickory_table() {
        let nx = NetError::Dns(DnsError::NoRecordsFound(
            hickory_resolver::net::NoRecords::new(
                hickory_proto::op::Query::default(),
                ResponseCode::NXDomain,
            ),
        ));
        let empty = NetError::Dns(DnsError::NoRecordsFound(
            hickory_resolver::net::NoRecords::new(
                hickory_proto::op::Query::default(),
                ResponseCode::NoError,
            ),
        ));
        let cases = [
            (nx, Failure::DnsNxdomain),
            (empty, Failure::DnsNoAnswer),
            (NetError::Timeout, Failure::Timeout),
            (
                NetError::Io(io::Error::from_raw_os_error(libc::ECONNREFUSED).into()),
                Failure::Refused,
            ),
            (
                NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)),
                Failure::DnsServfail,
            ),
            (
                NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)),
                Failure::DnsRefused,
            ),
            (NetError::NoConnections, Failure::Unknown),
        ];
        for (e, want) in cases {
            assert_eq!(hickory_failure(&e), want, "{e}");
        }
    }

    #[test]
    fn surge_table() {
        use surge_ping::{PingSequence, SurgeError};
        let cases = [
            (
                SurgeError::Timeout {
                    seq: PingSequence(1),
                },
                Failure::Timeout,
            ),
            (
                SurgeError::IOError(io::Error::from_raw_os_error(libc::ENETUNREACH)),
                Failure::Unreachable,
            ),
            (SurgeError::NetworkError, Failure::Unknown),
        ];
        for (e, want) in cases {
            assert_eq!(surge_failure(&e), want, "{e}");
        }
    }

    #[test]
    fn rustls_inside_io_is_found() {
        // The shape hyper-util produces: io(Other, io(InvalidData, rustls)).
        let inner = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let io = io::Error::other(inner);
        assert!(find_rustls(&io));
        let plain = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(!find_rustls(&plain));
        assert_eq!(find_io(&plain), Some(Failure::Reset));
    }
}
