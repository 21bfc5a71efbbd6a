//! Maps errors from io, hickory, rustls and hyper to the closed failure vocabulary.
//!
//! A failure label is only meaningful with the operation that failed (OONI's lesson): the
//! same `ECONNRESET` means "the TCP connection was cut" in `connect` and "a middlebox killed
//! the request" in `http_round_trip`. Anything that cannot be mapped is `unknown`; error text
//! never becomes a label.

use std::error::Error as StdError;
use std::io;

use hickory_proto::op::ResponseCode;
use hickory_resolver::net::{DnsError, NetError};

use blackout_model::observation::Failure;

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

/// Maps an error of the TLS handshake (phase `tls_handshake`). tokio-rustls reports
/// rustls's own errors (bad certificate, alert, protocol) as io errors that wrap them: those
/// are `tls_error`; a connection cut during the handshake keeps its io label (`reset`,
/// `eof`), which is what SNI-based blocking looks like.
pub fn tls_failure(e: &io::Error) -> Failure {
    if find_rustls(e) {
        return Failure::TlsError;
    }
    io_failure(e)
}

/// Maps an error of hyper's client connection (phase `http_round_trip`): the io error
/// underneath first (reset, refused...), a TLS alert after the handshake, then hyper's own
/// kind (the peer closed early: `eof`; not HTTP: `http_protocol_error`).
pub fn hyper_failure(e: &hyper::Error) -> Failure {
    let dyn_e: &(dyn StdError + 'static) = e;
    if find_rustls(dyn_e) {
        return Failure::TlsError;
    }
    find_io(dyn_e)
        .or_else(|| find_hyper(dyn_e))
        .unwrap_or(Failure::Unknown)
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
    fn tls_handshake_table() {
        let bad_cert = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            )
        };
        let cases = [
            (bad_cert(), Failure::TlsError),
            // hyper-util's shape: io(Other, io(InvalidData, rustls)).
            (io::Error::other(bad_cert()), Failure::TlsError),
            (
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
                ),
                Failure::TlsError,
            ),
            (
                io::Error::from_raw_os_error(libc::ECONNRESET),
                Failure::Reset,
            ),
            (io::Error::from(io::ErrorKind::UnexpectedEof), Failure::Eof),
            (
                io::Error::from_raw_os_error(libc::ETIMEDOUT),
                Failure::Timeout,
            ),
            (io::Error::other("something else"), Failure::Unknown),
        ];
        for (e, want) in cases {
            assert_eq!(tls_failure(&e), want, "{e}");
        }
    }

    /// Real hyper errors, from a client connection over an in-memory pipe whose other end
    /// plays the server.
    #[tokio::test]
    async fn hyper_round_trip_table() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        type Body = http_body_util::Empty<bytes::Bytes>;
        enum Server {
            Garbage,
            CloseAfterRequest,
            HalfHead,
        }
        let cases = [
            (Server::Garbage, Failure::HttpProtocolError),
            (Server::CloseAfterRequest, Failure::Eof),
            (Server::HalfHead, Failure::Eof),
        ];
        for (server, want) in cases {
            let (client, mut peer) = tokio::io::duplex(4096);
            let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Body>(
                hyper_util::rt::TokioIo::new(client),
            )
            .await
            .unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = peer.read(&mut buf).await;
                match server {
                    Server::Garbage => {
                        let _ = peer.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
                    }
                    Server::CloseAfterRequest => {}
                    Server::HalfHead => {
                        let _ = peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    }
                }
            });
            let req = hyper::Request::builder()
                .uri("/")
                .header("host", "x")
                .body(Body::new())
                .unwrap();
            let (c, r) = tokio::join!(conn, send.send_request(req));
            let e = c.err().or(r.err()).expect("the exchange fails");
            assert_eq!(hyper_failure(&e), want, "{e:?}");
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
