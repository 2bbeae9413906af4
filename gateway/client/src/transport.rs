//! How requests reach the server: pooled keep-alive connections.
//!
//! Plain HTTP/1.1 (the common case, and a load generator's) goes through [`Direct`]: the
//! client has one server, so its idle connections are one stack, with no pool keyed by origin
//! and no URL rewritten per request. HTTPS and HTTP/2 go through `hyper-util`'s pool.

use std::sync::Mutex;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::{chain, Error};

/// Idle connections kept at most; more are closed once their answer is read.
const IDLE_CONNECTIONS_MAX: usize = 1024;

type Pooled =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) enum Transport {
    Direct(Direct),
    Pooled(Box<Pooled>),
}

/// A connection lent to one request, given back once its answer is read.
pub(crate) struct Lent(Option<SendRequest<Full<Bytes>>>);

impl Transport {
    /// For `base` (`scheme://host[:port]`, checked by the builder).
    pub(crate) fn new(base: &Uri, http2: bool) -> Result<Transport, Error> {
        if base.scheme_str() == Some("http") && !http2 {
            let authority = base
                .authority()
                .ok_or_else(|| Error::Invalid(format!("{base}: no host")))?;
            let address = format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            );
            return Ok(Transport::Direct(Direct {
                host: HeaderValue::from_str(authority.as_str())
                    .map_err(|_| Error::Invalid(format!("{base}: not a host")))?,
                address,
                idle: Mutex::new(Vec::new()),
            }));
        }
        let mut plain = HttpConnector::new();
        plain.enforce_http(false);
        plain.set_nodelay(true);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(plain);
        Ok(Transport::Pooled(Box::new(
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(http2)
                .build(tls),
        )))
    }

    /// Whether request URIs are the path alone (origin form) rather than absolute.
    pub(crate) fn origin_form(&self) -> bool {
        matches!(self, Transport::Direct(_))
    }

    /// Sends `request`; the connection to give back with [`Transport::give_back`] once the
    /// answer's body is read.
    pub(crate) async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lent), Error> {
        match self {
            Transport::Pooled(pool) => {
                let response = pool.request(request).await.map_err(|error| {
                    let text = chain(&error);
                    Error::Transport(if error.is_connect() {
                        format!("connect: {text}")
                    } else {
                        text
                    })
                })?;
                Ok((response, Lent(None)))
            }
            Transport::Direct(direct) => {
                request.headers_mut().insert(HOST, direct.host.clone());
                direct.send(request).await
            }
        }
    }

    pub(crate) fn give_back(&self, lent: Lent) {
        if let (Transport::Direct(direct), Lent(Some(sender))) = (self, lent) {
            direct.give_back(sender);
        }
    }
}

pub(crate) struct Direct {
    /// `host:port`, as connected to.
    address: String,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Direct {
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lent), Error> {
        let (mut sender, reused) = self.checkout().await?;
        // A reused connection the server closed as it was taken: the request was not sent
        // (`is_canceled`), so it goes once more on a new connection, whatever its kind.
        let retry = reused.then(|| clone_request(&request));
        match sender.send_request(request).await {
            Ok(response) => Ok((response, Lent(Some(sender)))),
            Err(error) if error.is_canceled() && retry.is_some() => {
                let mut sender = self.connect().await?;
                let request = retry.expect("checked above");
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| Error::Transport(chain(&e)))?;
                Ok((response, Lent(Some(sender))))
            }
            Err(error) => Err(Error::Transport(chain(&error))),
        }
    }

    /// An idle connection that can take a request (and `true`), or a new one.
    async fn checkout(&self) -> Result<(SendRequest<Full<Bytes>>, bool), Error> {
        loop {
            let idle = self
                .idle
                .lock()
                .expect("never poisoned: no panics held")
                .pop();
            match idle {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        return Ok((sender, true));
                    }
                }
                None => return Ok((self.connect().await?, false)),
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let failed = |e: &dyn std::error::Error| Error::Transport(format!("connect: {}", chain(e)));
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|e| failed(&e))?;
        stream.set_nodelay(true).map_err(|e| failed(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(&e))?;
        // The connection's reading and writing, until either side closes it.
        tokio::spawn(connection);
        Ok(sender)
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("never poisoned: no panics held");
        if idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push(sender);
        }
    }
}

fn clone_request(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::{Client, Retry};

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
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = stream.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let text = String::from_utf8(request).unwrap().to_lowercase();
                    assert!(text.starts_with("post /v1/ledger/accounts/lookup http/1.1\r\n"));
                    assert!(text.contains("authorization: bearer key\r\n"));
                    assert!(text.contains(&format!("host: {addr}\r\n")));
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

    fn client(base: &str, timeout: Duration) -> Client {
        Client::builder(base)
            .api_key("key")
            .wire(crate::Wire::Json)
            .timeout(timeout)
            .retry(Retry {
                attempts: 1,
                ..Retry::default()
            })
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_opened_again() {
        // Told, and not told, that the server closes the connection after its answer: either
        // way the next request goes out on a new one.
        for close in ["connection: close\r\n", ""] {
            let answer: &'static str = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n{close}\r\n{{\"accounts\":[]}}"
            )
            .leak();
            let client = client(&server(Some(answer)).await, Duration::from_secs(5));
            for _ in 0..3 {
                assert_eq!(client.lookup_accounts(&[1]).await.unwrap(), []);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test]
    async fn a_request_without_an_answer_times_out() {
        let client = client(&server(None).await, Duration::from_millis(200));
        let error = client.lookup_accounts(&[1]).await.unwrap_err();
        assert!(matches!(error, crate::Error::Timeout(_)), "{error}");
        assert!(error.is_transient());
    }

    #[test]
    fn only_http_and_https_servers_are_bases() {
        for accepted in [
            "http://localhost",
            "https://kizo.example:8443/",
            "http://[::1]:80",
        ] {
            assert!(Client::builder(accepted).build().is_ok(), "{accepted}");
        }
        for refused in [
            "ftp://127.0.0.1",
            "http://",
            "http://host:1/path",
            "host:1",
            "",
        ] {
            assert!(Client::builder(refused).build().is_err(), "{refused}");
        }
    }
}
