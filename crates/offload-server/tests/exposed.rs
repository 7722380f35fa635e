//! A server exposed beyond loopback asks for a token even while the store
//! holds none, so deleting the last token locks the API instead of opening
//! it. (Served on loopback here, with the setting an exposed `offload
//! serve` uses.)

#![allow(clippy::unwrap_used)]

use offload::{Client, Role};
use offload_server::{ApiConfig, Metrics, router_with};
use reqwest::StatusCode;

async fn serve(client: Client, always_require_tokens: bool) -> String {
    let config = ApiConfig {
        always_require_tokens,
        ..ApiConfig::default()
    };
    let app = router_with(client, Metrics::new().unwrap(), &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_exposed_server_without_tokens_stays_locked() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("o.db").display());
    let client = Client::connect(&url).await.unwrap();
    let exposed = serve(client.clone(), true).await;
    let local = serve(client.clone(), false).await;
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status();

    // no token in the store: the exposed server refuses, a loopback one is open
    let r = http
        .get(format!("{exposed}/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::UNAUTHORIZED);
    let r = http.get(format!("{local}/v1/tasks")).send().await.unwrap();
    assert_eq!(status(r), StatusCode::OK);
    let r = http.get(format!("{exposed}/healthz")).send().await.unwrap();
    assert_eq!(status(r), StatusCode::OK);

    // with a token it works; once that token is deleted, locked again
    let made = client.create_token(Role::Admin, None).await.unwrap();
    let r = http
        .get(format!("{exposed}/v1/tasks"))
        .bearer_auth(&made.token)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::OK);
    let r = http
        .delete(format!("{exposed}/v1/tokens/{}", made.info.id))
        .bearer_auth(&made.token)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::NO_CONTENT);
    let r = http
        .get(format!("{exposed}/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::UNAUTHORIZED);
    let r = http
        .post(format!("{exposed}/v1/tokens"))
        .json(&serde_json::json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(r),
        StatusCode::UNAUTHORIZED,
        "nobody can mint a token"
    );

    // the first token made through an open API closes it at once
    let r = http
        .post(format!("{local}/v1/tokens"))
        .json(&serde_json::json!({"role": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::CREATED);
    let r = http.get(format!("{local}/v1/tasks")).send().await.unwrap();
    assert_eq!(status(r), StatusCode::UNAUTHORIZED);
}
