//! A worker's own keep-alive HTTP/1 connection: no pool to check a connection out of, no
//! redirect or proxy layers, no URL parsed per request. The generator shares the cores with
//! the server it measures, so each of its microseconds per request is taken from the figure.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::target::Unknown;

type Sender = SendRequest<Full<Bytes>>;

/// Where lanes connect, and the headers every request of theirs carries.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`, as connected to and as the `Host` header.
    authority: String,
    host: HeaderValue,
    auth: HeaderValue,
}

impl Endpoint {
    /// `base` is `http://host:port` (no path); `auth` the `Authorization` header's value.
    pub fn new(base: &str, auth: HeaderValue) -> Result<Endpoint, Unknown> {
        let authority = base
            .strip_prefix("http://")
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| Unknown::new("args", format!("--target {base}: http://HOST:PORT")))?;
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let host = HeaderValue::from_str(&authority)
            .map_err(|_| Unknown::new("args", format!("--target {base}: not a host")))?;
        Ok(Endpoint {
            authority,
            host,
            auth,
        })
    }
}

/// One connection, opened on first use and again after it breaks.
#[derive(Default)]
pub struct Lane {
    open: Option<Sender>,
}

impl Lane {
    /// POSTs `body` (of `content_type`, which it is also answered in) to `path` and reads the
    /// whole answer. A transport failure or a timeout is an unknown outcome, and the
    /// connection is dropped (the next request opens another).
    pub async fn post(
        &mut self,
        endpoint: &Endpoint,
        path: &'static str,
        body: impl Into<Bytes>,
        content_type: &'static str,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), Unknown> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, endpoint.host.clone())
            .header(AUTHORIZATION, endpoint.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .body(Full::new(body.into()))
            .map_err(|e| Unknown::new("args", e))?;
        let answer = tokio::time::timeout(timeout, self.exchange(endpoint, request)).await;
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(unknown)) => {
                self.open = None;
                Err(unknown)
            }
            Err(_) => {
                self.open = None;
                Err(Unknown::new(
                    "timeout",
                    format!("no answer within {timeout:?}"),
                ))
            }
        }
    }

    async fn exchange(
        &mut self,
        endpoint: &Endpoint,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Unknown> {
        let sender = self.ready(endpoint).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Unknown::new("transport", e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Unknown::new("transport", e))?
            .to_bytes();
        Ok((status, body))
    }

    /// The open connection, once it can take a request; a new one if it was closed while idle
    /// (nothing was sent on it, so nothing is in doubt).
    async fn ready(&mut self, endpoint: &Endpoint) -> Result<&mut Sender, Unknown> {
        if let Some(sender) = &mut self.open {
            if sender.ready().await.is_err() {
                self.open = None;
            }
        }
        if self.open.is_none() {
            let stream = TcpStream::connect(&endpoint.authority)
                .await
                .map_err(|e| Unknown::new("connect", e))?;
            stream
                .set_nodelay(true)
                .map_err(|e| Unknown::new("connect", e))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Unknown::new("connect", e))?;
            // The connection's reading and writing, until either side closes it.
            tokio::spawn(connection);
            self.open = Some(sender);
        }
        Ok(self.open.as_mut().expect("opened above"))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each connection's first request with `answer` and then closes
    /// it, or, with `None`, reads and never answers. Returns its `http://` address.
    async fn server(answer: Option<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    // Headers and the two-byte body `[]`.
                    while !request.ends_with(b"\r\n\r\n[]") {
                        let n = stream.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let text = String::from_utf8(request).unwrap();
                    assert!(text.starts_with("POST /v1/ledger/transfers HTTP/1.1\r\n"));
                    assert!(text.contains("authorization: Bearer key\r\n"));
                    match answer {
                        Some(answer) => {
                            stream.write_all(answer.as_bytes()).await.unwrap();
                            stream.shutdown().await.unwrap();
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn endpoint(base: &str) -> Endpoint {
        Endpoint::new(base, HeaderValue::from_static("Bearer key")).unwrap()
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_opened_again() {
        let base = server(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        ))
        .await;
        let endpoint = endpoint(&base);
        let mut lane = Lane::default();
        for _ in 0..3 {
            let (status, body) = lane
                .post(
                    &endpoint,
                    "/v1/ledger/transfers",
                    "[]",
                    "application/json",
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"{}"[..]));
        }
    }

    #[tokio::test]
    async fn a_request_without_an_answer_times_out_as_unknown() {
        let endpoint = endpoint(&server(None).await);
        let mut lane = Lane::default();
        let unknown = lane
            .post(
                &endpoint,
                "/v1/ledger/transfers",
                "[]",
                "application/json",
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
        assert_eq!(unknown.code, "timeout");
        assert!(
            lane.open.is_none(),
            "a connection in doubt is not used again"
        );
    }

    #[test]
    fn only_plain_http_addresses_are_endpoints() {
        let auth = HeaderValue::from_static("Bearer key");
        assert_eq!(
            Endpoint::new("http://localhost", auth.clone())
                .unwrap()
                .authority,
            "localhost:80"
        );
        for refused in [
            "https://127.0.0.1:8080",
            "http://",
            "http://host:1/path",
            "host:1",
        ] {
            assert!(Endpoint::new(refused, auth.clone()).is_err(), "{refused}");
        }
    }
}
