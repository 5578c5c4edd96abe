//! A call that gets no answer says which way it failed (DNS, refused, TLS,
//! timeout) and where it went (scheme, host and port; never the path or
//! query, which may carry an individual's id). Loopback only; the DNS case
//! uses the reserved `.invalid` name, which never resolves.

use std::time::Duration;

use bridge_partners::{ConnectorError, System, TransportCause};

async fn failure(url: &str) -> ConnectorError {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = client
        .get(url)
        .send()
        .await
        .expect_err("no answer expected");
    ConnectorError::transport(System::Primero, "GET /api/v2/cases", &err)
}

fn class_and_reason(e: &ConnectorError) -> (TransportCause, String) {
    (
        e.transport_cause().expect("a transport error"),
        e.to_string(),
    )
}

#[tokio::test]
async fn each_class_of_connection_failure_is_named_with_where_it_went() {
    // Refused: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (cause, said) = class_and_reason(
        &failure(&format!(
            "http://127.0.0.1:{port}/api/v2/cases?query=secret-id"
        ))
        .await,
    );
    assert_eq!(cause, TransportCause::Refused, "{said}");
    assert!(
        said.contains("connection refused") && said.contains(&format!("http://127.0.0.1:{port}")),
        "{said}"
    );
    assert!(!said.contains("secret-id"), "the query was echoed: {said}");

    // Timeout: a listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let (cause, said) = class_and_reason(&failure(&format!("http://{silent_addr}/x")).await);
    assert_eq!(cause, TransportCause::Timeout, "{said}");
    assert!(
        said.contains("timed out") && said.contains(&silent_addr.to_string()),
        "{said}"
    );

    // TLS: https spoken to a plain-text server.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let answer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        while let Ok((mut conn, _)) = plain.accept().await {
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let (cause, said) = class_and_reason(&failure(&format!("https://{plain_addr}/x")).await);
    assert!(
        matches!(
            cause,
            TransportCause::Tls
                | TransportCause::TlsRefusedByServer
                | TransportCause::TlsServerCertificate
        ),
        "{cause:?}: {said}"
    );
    assert!(
        said.contains("TLS") && said.contains(&format!("https://{plain_addr}")),
        "{said}"
    );

    // DNS: a name that cannot resolve.
    let (cause, said) = class_and_reason(&failure("https://primero.nonexistent.invalid/x").await);
    assert_eq!(cause, TransportCause::Dns, "{said}");
    assert!(
        said.contains("DNS") && said.contains("primero.nonexistent.invalid"),
        "{said}"
    );

    keep.abort();
    answer.abort();
}
